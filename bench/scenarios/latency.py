"""Scenario 4 of bench/run.py, latency: what it measures is in the docstring below and bench/README.md."""

from __future__ import annotations

import json
import shlex
import threading
import time
from datetime import UTC, datetime

from bench.common import RAW_QUEUE, SIMPLE, log, percentile, summary
from bench.loads import echo_body, open_loop, raw_done
from bench.report import Row, ratio, verdict
from bench.stack import Stack


def scenario_4_latency(stack: Stack, data: dict) -> list[Row]:
    """A steady 200 jobs/s for 20 s with 2 workers: enqueue-to-start and submit-to-succeeded."""
    from rq import Queue
    from rq.job import Job as RQJob

    from bench.raw_rq.tasks import now as raw_now
    from jobs.models import Job

    rate, secs, wait = stack.sizes["latency_rate"], stack.sizes["latency_seconds"], stack.sizes["latency_wait"]
    extra = shlex.split(stack.args.worker_args)
    out: dict = {"rate": rate, "seconds": secs}
    data["4"] = out

    # sentinelflow: POST /jobs at the rate, 2 workers running; times from the job rows afterwards.
    stack.reset()
    workers = stack.start_sf_workers(2, extra)
    try:
        stack.wait_registered(workers)
        body = json.dumps(echo_body(0)).encode()
        sent = open_loop(lambda i: (stack.sf_http.request("POST", "/jobs", body)[0] == 201, None), rate, secs)
        sent.pop("values")
        deadline = time.monotonic() + wait
        while stack.count(status="succeeded") < sent["ok"] and time.monotonic() < deadline:
            time.sleep(0.1)
        sf_cutoff = datetime.now(UTC)
    finally:
        stack.stop(workers)
    # A job still unfinished at the cut-off counts with the time it had waited by then (a lower bound),
    # so that a system that falls behind cannot look fast by leaving its slowest jobs out.
    rows = list(Job.objects.values_list("created_at", "enqueued_at", "started_at", "finished_at", "status"))
    sf_unfinished = sum(1 for r in rows if r[4] != "succeeded")
    sf_wait = [((r[2] or sf_cutoff) - (r[1] or r[0])).total_seconds() * 1000 for r in rows]
    sf_total = [((r[3] if r[4] == "succeeded" else sf_cutoff) - r[0]).total_seconds() * 1000 for r in rows]
    out["sentinelflow"] = {
        "submit": sent,
        "jobs": len(rows),
        "succeeded": len(rows) - sf_unfinished,
        "unfinished_at_cutoff": sf_unfinished,
        "statuses": stack.status_counts(),
        "enqueue_to_start_ms": summary(sf_wait),
        "submit_to_succeeded_ms": summary(sf_total),
    }
    log(
        f"4: sentinelflow {len(rows) - sf_unfinished}/{len(rows)} succeeded ({sent['achieved_rate']:.0f} submits/s); "
        f"wait p50 {summary(sf_wait).get('p50', 0):.1f} ms p99 {summary(sf_wait).get('p99', 0):.1f} ms"
    )
    stack.reset()

    # raw RQ: enqueue `now` at the rate from this process, 2 SimpleWorkers; RQ's own timestamps.
    workers = stack.start_raw_workers(2, SIMPLE)
    q = Queue(RAW_QUEUE, connection=stack.redis)
    ids: list[str] = []
    try:
        stack.wait_registered(workers)
        lock = threading.Lock()

        def enqueue(i: int) -> tuple[bool, None]:
            job = q.enqueue(raw_now, result_ttl=3600)
            with lock:
                ids.append(job.id)
            return True, None

        raw_sent = open_loop(enqueue, rate, secs, threads=2)
        raw_sent.pop("values")
        done = raw_done(stack)
        deadline = time.monotonic() + wait
        while done() < len(ids) and time.monotonic() < deadline:
            time.sleep(0.1)
        raw_cutoff = datetime.now(UTC)
    finally:
        stack.stop(workers)
    jobs = [j for chunk in range(0, len(ids), 1000) for j in RQJob.fetch_many(ids[chunk : chunk + 1000], stack.redis)]
    jobs = [j for j in jobs if j is not None]
    raw_unfinished = sum(1 for j in jobs if not j.ended_at) + (len(ids) - len(jobs))
    raw_wait = [((j.started_at or raw_cutoff) - j.enqueued_at).total_seconds() * 1000 for j in jobs]
    raw_total = [((j.ended_at or raw_cutoff) - j.created_at).total_seconds() * 1000 for j in jobs]
    out["raw_rq"] = {
        "enqueue": raw_sent,
        "jobs": len(ids),
        "finished": len(ids) - raw_unfinished,
        "unfinished_at_cutoff": raw_unfinished,
        "enqueue_to_start_ms": summary(raw_wait),
        "enqueue_to_end_ms": summary(raw_total),
    }
    log(f"4: raw RQ {len(ids) - raw_unfinished}/{len(ids)} finished")
    stack.reset()

    note = f"sf {len(rows) - sf_unfinished}/{len(rows)} succeeded at {sent['achieved_rate']:.0f} submits/s"
    if sf_unfinished:
        note += f" ({sf_unfinished} unfinished {wait:g} s after the last submit: sf values are lower bounds)"
    note += f"; raw {len(ids) - raw_unfinished}/{len(ids)} at {raw_sent['achieved_rate']:.0f}/s"
    result = []
    for label, s, r in (
        ("enqueue->start", sf_wait, raw_wait),
        ("submit->succeeded", sf_total, raw_total),
    ):
        for q_name, fraction in (("p50", 0.5), ("p99", 0.99)):
            sv = percentile(s, fraction) if s else None
            rv = percentile(r, fraction) if r else None
            rr = ratio(sv, rv)
            # Unfinished sf jobs make its figures lower bounds: a ratio over 2 is a sure miss, under 2 is not a pass.
            ok = None if rr is None else (rr <= 2 and not sf_unfinished)
            first_note = note if not result else ""
            result.append(Row("4 latency", f"{label} {q_name}", sv, rv, "ms", rr, "<= 2x", verdict(ok), first_note))
    return result
