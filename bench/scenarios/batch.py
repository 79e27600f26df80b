"""Scenario 3 of bench/run.py, batch: what it measures is in the docstring below and bench/README.md."""

from __future__ import annotations

import json
import time

from bench.common import RAW_QUEUE, log, summary
from bench.loads import echo_body, has_batch, probe_batch
from bench.report import Row, ratio, verdict
from bench.stack import Stack


def scenario_3_batch(stack: Stack, data: dict) -> list[Row]:
    """POST /jobs/batch with 500 echo bodies, ~10 s or 20 batches: jobs/s; vs RQ enqueue_many of 500."""
    from rq import Queue

    from bench.raw_rq.tasks import noop

    size, most, secs = stack.sizes["batch_size"], stack.sizes["batch_max"], stack.sizes["batch_seconds"]
    stack.reset()
    out: dict = {"batch_size": size}
    data["3"] = out
    sf_rate = None
    note = ""
    status = probe_batch(stack)
    if has_batch(stack):
        body = json.dumps({"jobs": [echo_body(i) for i in range(size)]}).encode()
        stack.sf_http.request("POST", "/jobs/batch", body)  # warm-up
        stack.reset()
        latencies, stored, errors = [], 0, 0
        began = time.perf_counter()
        while stored // size < most and time.perf_counter() - began < secs:
            t = time.perf_counter()
            code, _ = stack.sf_http.request("POST", "/jobs/batch", body)
            if code == 201:
                stored += size
                latencies.append((time.perf_counter() - t) * 1000)
            else:
                errors += 1
                if errors > 3:
                    break
        elapsed = time.perf_counter() - began
        sf_rate = stored / elapsed
        out["sentinelflow"] = {"jobs": stored, "errors": errors, "seconds": elapsed, "rate": sf_rate}
        out["sentinelflow"]["batch_ms"] = summary(latencies)
        if errors:
            note = f"{errors} batches refused"
        log(f"3: sentinelflow POST /jobs/batch: {sf_rate:.0f} jobs/s")
    else:
        note = f"POST /jobs/batch missing: probe answered {status}"
        out["sentinelflow"] = {"blocked": note}
        log(f"3: {note}")
    stack.reset()

    q = Queue(RAW_QUEUE, connection=stack.redis)
    q.enqueue_many([Queue.prepare_data(noop) for _ in range(size)])  # warm-up
    stack.redis.flushall()
    latencies, stored = [], 0
    began = time.perf_counter()
    while stored // size < most and time.perf_counter() - began < secs:
        t = time.perf_counter()
        q.enqueue_many([Queue.prepare_data(noop) for _ in range(size)])
        latencies.append((time.perf_counter() - t) * 1000)
        stored += size
    elapsed = time.perf_counter() - began
    ref_rate = stored / elapsed
    out["raw_rq"] = {"jobs": stored, "seconds": elapsed, "rate": ref_rate, "call_ms": summary(latencies)}
    log(f"3: raw RQ enqueue_many: {ref_rate:.0f} jobs/s")
    stack.reset()
    r = ratio(sf_rate, ref_rate)
    return [
        Row(
            "3 batch",
            f"{size} jobs per call",
            sf_rate,
            ref_rate,
            "jobs/s",
            r,
            ">= 0.8x",
            verdict(r >= 0.8) if r is not None else "BLOCKED",
            note,
        )
    ]
