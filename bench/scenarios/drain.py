"""Scenario 1 of bench/run.py, drain: what it measures is in the docstring below and bench/README.md."""

from __future__ import annotations

import shlex

from bench.common import FORK, SIMPLE, log
from bench.loads import MemorySampler, drain, echo_body, raw_done, raw_enqueue, sf_done, submit_jobs
from bench.report import Row, drain_note, ratio, sf_mode, verdict
from bench.scenarios.memory import web_memory
from bench.stack import Stack


def scenario_1_drain(stack: Stack, data: dict) -> list[Row]:
    """5,000 echo jobs already submitted, then 1 and 2 worker processes: jobs/s until all succeeded."""
    from bench.raw_rq.tasks import noop

    n, cap = stack.sizes["drain_jobs"], stack.args.drain_cap or stack.sizes["drain_cap"]
    extra = shlex.split(stack.args.worker_args)
    stack.reset()
    out: dict = {"jobs": n, "cap_seconds": cap, "worker_args": extra, "sentinelflow": {}, "raw_rq": {}}
    data["1"] = out
    submitted = 0
    for procs in (1, 2):
        # Each phase starts with n jobs waiting: the first submits n, the second tops the backlog up to n.
        waiting = stack.count(status="queued")
        if waiting < n:
            sub = submit_jobs(stack, [echo_body(submitted + i) for i in range(n - waiting)])
            submitted += sub["jobs"]
            out["sentinelflow"][f"submit_before_{procs}"] = sub
            log(f"1: submitted {sub['jobs']} echo jobs in {sub['seconds']:.1f} s ({sub['how']})")
        base = stack.count(status="succeeded")
        workers = stack.start_sf_workers(procs, extra)
        sampler = MemorySampler([p.pid for p in workers]) if procs == 2 else None
        done = sf_done(stack)
        result = drain(stack, workers, lambda done=done, base=base: done() - base, n, cap, sampler)
        out["sentinelflow"][f"{procs}_procs"] = result
        log(f"1: sentinelflow {procs} worker(s): {result['rate']:.0f} jobs/s ({drain_note(result)})")
        if sampler:
            data["memory_worker_sampler"] = {
                "peak_tree_mb": sampler.peak_tree_mb,
                "peak_main_rss_mb": sampler.peak_main_rss_mb,
                "peak_child_rss_mb": sampler.peak_child_rss_mb,
                "peak_child_uss_mb": sampler.peak_child_uss_mb,
                "samples": sampler.samples,
            }
    # Memory (scenario 7) is read after this scenario: the web workers have served every submit.
    data["memory_web_after_1"] = web_memory(stack)
    out["sentinelflow"]["final_statuses"] = stack.status_counts()
    stack.reset()

    for worker_class, label in ((SIMPLE, "simple"), (FORK, "fork")):
        for procs in (1, 2):
            stack.redis.flushall()
            enqueue_s = raw_enqueue(stack, noop, n)
            workers = stack.start_raw_workers(procs, worker_class)
            result = drain(stack, workers, raw_done(stack), n, cap) | {"enqueue_many_seconds": enqueue_s}
            out["raw_rq"][f"{label}_{procs}_procs"] = result
            log(f"1: raw RQ {label} x{procs}: {result['rate']:.0f} jobs/s ({drain_note(result)})")
    stack.reset()

    sf, raw = out["sentinelflow"], out["raw_rq"]
    rows = []
    for procs in (1, 2):
        s, r = sf[f"{procs}_procs"], raw[f"simple_{procs}_procs"]
        rows.append(
            Row(
                "1 drain",
                f"{procs} proc{'s' if procs > 1 else ''} vs SimpleWorker",
                s["rate"],
                r["rate"],
                "jobs/s",
                ratio(s["rate"], r["rate"]),
                ">= 1.0x" if procs == 2 else "",
                verdict(ratio(s["rate"], r["rate"]) >= 1.0) if procs == 2 else "",
                f"sf {drain_note(s)}; raw {drain_note(r)}" + (f"; sf {sf_mode(stack, extra)}" if procs == 1 else ""),
            )
        )
    for procs in (1, 2):
        s, r = sf[f"{procs}_procs"], raw[f"fork_{procs}_procs"]
        rows.append(
            Row(
                "1 drain",
                f"{procs} proc{'s' if procs > 1 else ''} vs fork Worker",
                s["rate"],
                r["rate"],
                "jobs/s",
                ratio(s["rate"], r["rate"]),
                note=f"raw {drain_note(r)}",
            )
        )
    return rows
