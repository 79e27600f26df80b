"""What every part of the bench shares: paths, names, sizes, the log, and small statistics."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"

SF_QUEUES = ["high", "default", "low"]

RAW_QUEUE = "bench_raw"  # raw RQ drain, latency and I/O references

RAW_SUBMIT_QUEUE = "bench"  # the bare DRF endpoint's queue (bench/raw_rq/views.py)

API_KEY = "bench-key"

PG_BASE = "postgres://postgres@127.0.0.1:5432/"

SIMPLE = "rq.worker.SimpleWorker"

FORK = "rq.worker.Worker"

SIZES = {
    "full": {
        "drain_jobs": 5000,
        "drain_cap": 10.0,  # seconds of draining per phase at most
        "submit_seconds": 15.0,
        "submit_clients": 16,
        "steady_rate": 200,
        "steady_seconds": 10.0,
        "batch_size": 500,
        "batch_max": 20,
        "batch_seconds": 10.0,
        "latency_rate": 200,
        "latency_seconds": 20.0,
        "latency_wait": 15.0,  # after the last submit, at most this long for the stragglers
        "io_jobs": 1000,
        "io_seconds": 0.1,
        "io_cap": 15.0,
        "scale_rows": 200_000,
        "scale_queued": 10_000,
        "scale_requests": 200,
    },
    "quick": {
        "drain_jobs": 500,
        "drain_cap": 8.0,
        "submit_seconds": 3.0,
        "submit_clients": 16,
        "steady_rate": 200,
        "steady_seconds": 3.0,
        "batch_size": 500,
        "batch_max": 4,
        "batch_seconds": 3.0,
        "latency_rate": 200,
        "latency_seconds": 4.0,
        "latency_wait": 10.0,
        "io_jobs": 100,
        "io_seconds": 0.1,
        "io_cap": 6.0,
        "scale_rows": 20_000,
        "scale_queued": 1_000,
        "scale_requests": 50,
    },
}


START = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {message}", flush=True)


def summary(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50": statistics.median(samples),
        "p99": percentile(samples, 0.99),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size of a live process (VmHWM), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
