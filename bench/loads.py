"""Load generators: the HTTP client, closed and open loops, submitting and draining jobs, memory sampling."""

from __future__ import annotations

import http.client
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import psutil

from bench.common import RAW_QUEUE, log, summary

if TYPE_CHECKING:
    from bench.stack import Stack


IDLE_REOPEN = 1.0  # seconds a kept-alive connection may sit idle before a request opens a fresh one


class HttpClient:
    """A light client: one http.client connection per thread, reopened when the server closes it
    (gunicorn's sync workers close after every response). Less client CPU than requests on 2 cores."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.headers = headers or {}
        self.local = threading.local()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        elif time.monotonic() - self.local.used > IDLE_REOPEN:
            conn.close()  # the server may have dropped it (gunicorn keeps an idle connection 2 s): reopen
        self.local.used = time.monotonic()
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            return 0, b""


def closed_loop(call: Callable[[], bool], clients: int, seconds: float, keep_samples: bool = False) -> dict:
    """`clients` threads call back to back for `seconds`: throughput and latency."""
    stop_at = time.perf_counter() + seconds

    def client() -> tuple[list[float], int]:
        latencies, errors = [], 0
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            ok = call()
            if ok:
                latencies.append((time.perf_counter() - start) * 1000)
            else:
                errors += 1
        return latencies, errors

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = [f.result() for f in [pool.submit(client) for _ in range(clients)]]
    elapsed = time.perf_counter() - began
    latencies = [ms for lat, _ in outcomes for ms in lat]
    errors = sum(e for _, e in outcomes)
    result = {"ok": len(latencies), "errors": errors, "seconds": elapsed, "rate": len(latencies) / elapsed}
    result["latency_ms"] = summary(latencies)
    if keep_samples:
        result["samples"] = latencies
    return result


def merge_slices(parts: list[dict]) -> dict:
    """Closed-loop slices of one side, added up: total requests over total time, latencies pooled."""
    samples = [ms for part in parts for ms in part.pop("samples")]
    ok, seconds = sum(p["ok"] for p in parts), sum(p["seconds"] for p in parts)
    return {
        "ok": ok,
        "errors": sum(p["errors"] for p in parts),
        "seconds": seconds,
        "rate": ok / seconds,
        "latency_ms": summary(samples),
        "slices": [{"rate": p["rate"], "p99": p["latency_ms"].get("p99")} for p in parts],
    }


def open_loop(call: Callable[[int], tuple[bool, object]], rate: float, seconds: float, threads: int = 16) -> dict:
    """Request number i is due at t0 + i/rate (an open loop: a slow answer does not slow the schedule
    down, up to `threads` in flight). Latency from the actual send, and from the due time (which also
    counts any lateness of the client). Bounded: nothing is sent after seconds + 2 (a server that cannot
    keep up is left with requests never sent: `sent` < `due`)."""
    total = int(rate * seconds)
    counter = itertools.count()
    t0 = time.perf_counter() + 0.05
    hard_stop = t0 + seconds + 2

    def sender() -> list[tuple]:
        out = []
        while (i := next(counter)) < total:
            due = t0 + i / rate
            if (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
            start = time.perf_counter()
            if start > hard_stop:
                break
            ok, value = call(i)
            end = time.perf_counter()
            out.append((i, ok, value, (end - start) * 1000, (end - due) * 1000, start - due))
        return out

    with ThreadPoolExecutor(threads) as pool:
        rows = [r for f in [pool.submit(sender) for _ in range(threads)] for r in f.result()]
    elapsed = time.perf_counter() - t0
    good = [r for r in rows if r[1]]
    return {
        "due": total,
        "sent": len(rows),
        "ok": len(good),
        "errors": len(rows) - len(good),
        "seconds": elapsed,
        "achieved_rate": len(good) / elapsed,
        "latency_ms": summary([r[3] for r in good]),
        "latency_from_due_ms": summary([r[4] for r in good]),
        "max_send_lateness_ms": max((r[5] * 1000 for r in rows), default=0.0),
        "values": [r[2] for r in good],
    }


def echo_body(i: int) -> dict:
    return {"type": "echo", "payload": {"n": i}}


def probe_batch(stack: Stack) -> int:
    """POST /jobs/batch with no jobs: 404/405 when the endpoint is missing (the detail route answers),
    201 or 400 when it exists. Stores nothing either way."""
    if stack.batch_status is None:
        stack.batch_status = stack.sf_http.request("POST", "/jobs/batch", json.dumps({"jobs": []}).encode())[0]
        log(f"POST /jobs/batch probe answered {stack.batch_status}")
    return stack.batch_status


def has_batch(stack: Stack) -> bool:
    return probe_batch(stack) not in (0, 404, 405)


def submit_jobs(stack: Stack, bodies: list[dict], deadline_s: float = 120) -> dict:
    """The fastest public way in: POST /jobs/batch in batches of 500 when it exists, else 16 concurrent
    POST /jobs. Raises when more than 1% fail."""
    began = time.perf_counter()
    stop_at = began + deadline_s
    ok = errors = 0
    lock = threading.Lock()
    if has_batch(stack):
        chunks = [bodies[i : i + 500] for i in range(0, len(bodies), 500)]
        items: list = [json.dumps({"jobs": chunk}).encode() for chunk in chunks]
        sizes = [len(chunk) for chunk in chunks]
        path, threads, expect, how = "/jobs/batch", 2, 201, "POST /jobs/batch x500, 2 clients"
    else:
        items = [json.dumps(body).encode() for body in bodies]
        sizes = [1] * len(items)
        path, threads, expect, how = "/jobs", 16, 201, "POST /jobs, 16 clients"
    counter = itertools.count()

    def client() -> None:
        nonlocal ok, errors
        while (i := next(counter)) < len(items) and time.perf_counter() < stop_at:
            status, _ = stack.sf_http.request("POST", path, items[i])
            with lock:
                if status == expect:
                    ok += sizes[i]
                else:
                    errors += sizes[i]

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(client) for _ in range(threads)]:
            future.result()
    elapsed = time.perf_counter() - began
    if errors > len(bodies) * 0.01 or ok < len(bodies) * 0.99:
        raise RuntimeError(f"submitting {len(bodies)} jobs: {ok} stored, {errors} refused ({how})")
    return {"jobs": ok, "errors": errors, "seconds": elapsed, "rate": ok / elapsed, "how": how}


def drain(
    stack: Stack,
    workers: list[subprocess.Popen],
    done: Callable[[], int],
    total: int,
    cap: float,
    sampler: MemorySampler | None = None,
) -> dict:
    """Time from the moment all workers are registered until `done()` reaches `total`, at most `cap`
    seconds. Jobs finished before that moment are subtracted. Stops the workers."""
    try:
        t0 = stack.wait_registered(workers)
        c0 = done()
        if sampler:
            sampler.start()
        count, now = c0, t0
        while True:
            count, now = done(), time.perf_counter()
            if count >= total or now - t0 >= cap:
                break
            if all(p.poll() is not None for p in workers):
                raise RuntimeError(f"all workers exited:\n{stack.tail(workers[0])}")
            time.sleep(0.05)
        if sampler:
            sampler.stop()
        rate = (count - c0) / (now - t0) if now > t0 else 0.0
        return {
            "rate": rate,
            "done": count,
            "total": total,
            "seconds": now - t0,
            "complete": count >= total,
            "done_before_clock": c0,
        }
    finally:
        if sampler:
            sampler.stop()
        stack.stop(workers)


def raw_enqueue(stack: Stack, func: Callable, n: int, args: tuple = (), queue: str = RAW_QUEUE) -> float:
    from rq import Queue

    q = Queue(queue, connection=stack.redis)
    began = time.perf_counter()
    for start in range(0, n, 1000):
        q.enqueue_many([Queue.prepare_data(func, args=args, result_ttl=3600) for _ in range(min(1000, n - start))])
    return time.perf_counter() - began


def raw_done(stack: Stack, queue: str = RAW_QUEUE) -> Callable[[], int]:
    from rq.registry import FailedJobRegistry, FinishedJobRegistry

    finished = FinishedJobRegistry(queue, connection=stack.redis).key
    failed = FailedJobRegistry(queue, connection=stack.redis).key

    def done() -> int:
        count, failures = stack.redis.zcard(finished), stack.redis.zcard(failed)
        if failures:
            raise RuntimeError(f"{failures} raw RQ jobs failed on queue {queue}")
        return count

    return done


def sf_done(stack: Stack) -> Callable[[], int]:
    def done() -> int:
        failed = stack.count(status__in=["failed", "retrying"])
        if failed:
            raise RuntimeError(f"{failed} sentinelflow jobs failed or are retrying: {stack.status_counts()}")
        return stack.count(status="succeeded")

    return done


class MemorySampler:
    """Samples each worker's tree every 0.2 s: the main process's RSS plus its children's USS (a forked
    work horse shares the parent's pages; USS is what it adds). Keeps the peaks."""

    def __init__(self, pids: list[int], interval: float = 0.2) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_tree_mb = 0.0
        self.peak_main_rss_mb = 0.0
        self.peak_child_rss_mb = 0.0
        self.peak_child_uss_mb = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                try:
                    main = psutil.Process(pid)
                    rss = main.memory_info().rss / 2**20
                    tree = rss
                    for child in main.children(recursive=True):
                        try:
                            info = child.memory_full_info()
                        except psutil.Error:
                            continue
                        tree += info.uss / 2**20
                        self.peak_child_rss_mb = max(self.peak_child_rss_mb, info.rss / 2**20)
                        self.peak_child_uss_mb = max(self.peak_child_uss_mb, info.uss / 2**20)
                    self.peak_main_rss_mb = max(self.peak_main_rss_mb, rss)
                    self.peak_tree_mb = max(self.peak_tree_mb, tree)
                    self.samples += 1
                except psutil.Error:
                    continue
            self._stop.wait(self.interval)
