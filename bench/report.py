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


@dataclass
class PeerLine:
    """One system of scenario 8's side-by-side table: its drain (2 worker processes), the ratio to raw RQ's
    2 SimpleWorkers, its single and bulk enqueue rates and its enqueue->start latency at 200 jobs/s."""

    system: str
    worker: str
    drain: dict | None
    raw_rate: float | None
    figures: dict
    note: str = ""


def peer_table(lines: list[PeerLine]) -> str:
    header = (
        f"{'system':<14} {'drain jobs/s':>12} {'vs raw RQ':>9} {'enqueue/s':>9} {'bulk/s':>8} "
        f"{'start p50 / p99 ms':>19}  {'worker':<48} note"
    )
    out = [header, "-" * len(header)]
    for line in lines:
        rate = line.drain["rate"] if line.drain else None
        single = (line.figures.get("enqueue_single") or {}).get("rate")
        bulk = (line.figures.get("enqueue_bulk") or {}).get("rate")
        late = line.figures.get("latency") or {}
        latency = f"{fmt(late['p50'])} / {fmt(late['p99'])}" if late.get("p50") is not None else "—"
        r = ratio(rate, line.raw_rate)
        note = line.note
        if line.drain and not line.drain.get("complete", True):
            note = "; ".join(filter(None, [drain_note(line.drain), note]))
        out.append(
            f"{line.system:<14} {fmt(rate):>12} {(f'{r:.2f}x' if r is not None else '—'):>9} {fmt(single):>9} "
            f"{fmt(bulk):>8} {latency:>19}  {line.worker:<48} {note}"
        )
    return "\n".join(out)
