"""Scenario 5 of bench/run.py, I/O-bound: what it measures is in the docstring below and bench/README.md."""

from __future__ import annotations

import shlex

from bench.common import SIMPLE, log
from bench.loads import MemorySampler, drain, raw_done, raw_enqueue, sf_done, submit_jobs
from bench.report import Row, drain_note, ratio, sf_mode, verdict
from bench.stack import Stack


def io_worker_args(stack: Stack) -> list[str]:
    chosen = stack.args.io_worker_args
    if chosen == "auto":
        found = stack.worker_modes.get("auto_io_args")
        return list(found) if found else shlex.split(stack.args.worker_args)
    if chosen == "none":
        return []
    return shlex.split(chosen)


def scenario_5_io(stack: Stack, data: dict) -> list[Row]:
    """1,000 jobs each sleeping 0.1 s with 2 worker processes: jobs/s; vs raw RQ with 2 SimpleWorkers."""
    from bench.raw_rq.tasks import sleep as raw_sleep

    n, secs = stack.sizes["io_jobs"], stack.sizes["io_seconds"]
    cap = stack.args.io_cap or stack.sizes["io_cap"]
    extra = io_worker_args(stack)
    out: dict = {"jobs": n, "sleep_seconds": secs, "cap_seconds": cap, "worker_args": extra}
    data["5"] = out
    stack.reset()
    sub = submit_jobs(stack, [{"type": "sleep", "payload": {"seconds": secs}} for _ in range(n)])
    workers = stack.start_sf_workers(2, extra)
    sampler = MemorySampler([p.pid for p in workers])
    sf = drain(stack, workers, sf_done(stack), n, cap, sampler) | {"submit": sub}
    out["sentinelflow"] = sf
    data["memory_io_worker_sampler"] = {"worker_args": extra, "peak_tree_mb": sampler.peak_tree_mb}
    log(f"5: sentinelflow 2 workers {' '.join(extra)}: {sf['rate']:.1f} jobs/s ({drain_note(sf)})")
    stack.reset()
    raw_enqueue(stack, raw_sleep, n, args=(secs,))
    workers = stack.start_raw_workers(2, SIMPLE)
    raw = drain(stack, workers, raw_done(stack), n, cap)
    out["raw_rq"] = raw
    log(f"5: raw RQ 2 SimpleWorkers: {raw['rate']:.1f} jobs/s ({drain_note(raw)})")
    stack.reset()
    r = ratio(sf["rate"], raw["rate"])
    return [
        Row(
            "5 I/O-bound",
            f"{n} x sleep {secs:g} s, 2 procs",
            sf["rate"],
            raw["rate"],
            "jobs/s",
            r,
            ">= 10x",
            verdict(r is not None and r >= 10),
            f"sf {sf_mode(stack, extra)}; sf {drain_note(sf)}; raw {drain_note(raw)}",
        )
    ]
