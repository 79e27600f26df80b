"""The result rows, their verdicts, and the table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.stack import Stack


@dataclass
class Row:
    scenario: str
    metric: str
    sentinelflow: float | None
    reference: float | None
    unit: str
    ratio: float | None = None
    target: str = ""
    verdict: str = ""
    note: str = ""


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "MISS")


def sf_mode(stack: Stack, extra: list[str]) -> str:
    if extra:
        return " ".join(extra)
    return f"default worker {stack.worker_modes.get('default_worker_class', '?')}"


def drain_note(result: dict) -> str:
    if result.get("complete", True):
        return f"{result['seconds']:.1f} s"
    return f"partial {result['done']}/{result['total']} in {result['seconds']:.0f} s cap"


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit in ("ms",) or abs(value) < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def print_table(rows: list[Row]) -> str:
    header = (
        f"{'scenario':<12} {'metric':<40} {'sentinelflow':>12} {'reference':>11} {'unit':<7} "
        f"{'ratio':>7} {'target':<9} {'result':<7} note"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.scenario:<12} {r.metric:<40} {fmt(r.sentinelflow, r.unit):>12} {fmt(r.reference, r.unit):>11} "
            f"{r.unit:<7} {(f'{r.ratio:.2f}x' if r.ratio is not None else '—'):>7} {r.target:<9} "
            f"{r.verdict:<7} {r.note}"
        )
    text = "\n".join(lines)
    print("\n" + text + "\n", flush=True)
    return text
