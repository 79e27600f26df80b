"""Scenario 2 of bench/run.py, submit: what it measures is in the docstring below and bench/README.md."""

from __future__ import annotations

import json

from bench.common import log
from bench.loads import closed_loop, echo_body, merge_slices, open_loop
from bench.report import Row, ratio, verdict
from bench.stack import Stack


def scenario_2_submit(stack: Stack, data: dict) -> list[Row]:
    """Single-job POST /jobs, 16 concurrent clients; and p99 at a steady 200 req/s."""
    secs, clients = stack.sizes["submit_seconds"], stack.sizes["submit_clients"]
    body = json.dumps(echo_body(0)).encode()
    stack.reset()

    def sf_call() -> bool:
        return stack.sf_http.request("POST", "/jobs", body)[0] == 201

    def ref_call() -> bool:
        return stack.ref_http.request("POST", "/jobs", body)[0] == 201

    for _ in range(50):  # warm both up: first requests import lazily and open connections
        sf_call()
        ref_call()
    # Three alternating slices each (sf, ref, sf, ref, sf, ref), so that the noise of a shared machine
    # falls on both sides alike; the slices add up to `secs` per side.
    slices: dict[str, list[dict]] = {"sf": [], "ref": []}
    for _ in range(3):
        for side, call in (("sf", sf_call), ("ref", ref_call)):
            stack.reset()
            slices[side].append(closed_loop(call, clients, secs / 3, keep_samples=True))
    stack.reset()
    sf, ref = merge_slices(slices["sf"]), merge_slices(slices["ref"])
    log(f"2: sentinelflow POST /jobs: {sf['rate']:.0f} req/s, p99 {sf['latency_ms'].get('p99', 0):.1f} ms")
    log(f"2: bare DRF+RQ POST /jobs: {ref['rate']:.0f} req/s, p99 {ref['latency_ms'].get('p99', 0):.1f} ms")
    rate = stack.sizes["steady_rate"]
    steady = open_loop(lambda i: (sf_call(), None), rate, stack.sizes["steady_seconds"])
    steady.pop("values")
    log(f"2: sentinelflow at {rate} req/s: p99 {steady['latency_ms'].get('p99', 0):.1f} ms")
    stack.reset()
    ref_steady = open_loop(lambda i: (ref_call(), None), rate, stack.sizes["steady_seconds"])
    ref_steady.pop("values")
    stack.reset()
    data["2"] = {"clients": clients, "seconds": secs, "sentinelflow": sf, "reference": ref}
    data["2"] |= {"steady_sentinelflow": steady, "steady_reference": ref_steady}

    def errs(result: dict) -> str:
        return f"{result['errors']} errors" if result["errors"] else ""

    p99 = steady["latency_ms"].get("p99")
    return [
        Row(
            "2 submit",
            f"POST /jobs, {clients} clients",
            sf["rate"],
            ref["rate"],
            "req/s",
            ratio(sf["rate"], ref["rate"]),
            ">= 0.8x",
            verdict(ratio(sf["rate"], ref["rate"]) >= 0.8),
            " ".join(filter(None, [errs(sf), errs(ref)])),
        ),
        Row(
            "2 submit",
            f"p50 latency, {clients} clients",
            sf["latency_ms"].get("p50"),
            ref["latency_ms"].get("p50"),
            "ms",
            ratio(sf["latency_ms"].get("p50"), ref["latency_ms"].get("p50")),
        ),
        Row(
            "2 submit",
            f"p99 latency, {clients} clients",
            sf["latency_ms"].get("p99"),
            ref["latency_ms"].get("p99"),
            "ms",
            ratio(sf["latency_ms"].get("p99"), ref["latency_ms"].get("p99")),
        ),
        Row(
            "2 submit",
            f"p99 latency at {rate} req/s",
            p99,
            ref_steady["latency_ms"].get("p99"),
            "ms",
            ratio(p99, ref_steady["latency_ms"].get("p99")),
            "<= 25 ms",
            verdict(p99 is not None and p99 <= 25 and steady["errors"] == 0),
            f"sent {steady['ok']}/{steady['due']} ok, {steady['achieved_rate']:.0f} req/s achieved",
        ),
    ]
