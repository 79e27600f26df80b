"""Benchmark suite: sentinelflow against raw RQ, scenario by scenario, in one run.

    python bench/run.py [--db sqlite|postgres] [--quick] [--only 1,3] [--worker-args "..."]
                        [--io-worker-args "..."|auto|none] [--drain-cap S] [--io-cap S]

Starts its own private redis-server, a fresh database (PostgreSQL when a server answers on
127.0.0.1:5432, as a new database sentinelflow_bench_<hex> that is dropped at the end; else SQLite),
migrates it, serves the app as in production (gunicorn -c sentinelflow_site/gunicorn.conf.py, 2 web
workers, prometheus multiprocess mode) and a bare DRF + RQ reference app (bench/raw_rq, gunicorn -w 2),
and starts workers per phase (`manage.py rqworker high default low [--worker-args]`; the reference uses
`rq worker` with SimpleWorker and with the default fork Worker). Every scenario measures sentinelflow
AND the raw-RQ reference in the same run, on the same Redis. Prints one table (with the targets and
PASS/MISS), saves JSON under bench/results/run-<UTC stamp>.json, and stops everything it started.

Scenarios (see docs/performance.md for how each is measured):
  1 drain 5,000 echo jobs with 1 and 2 worker processes      5 1,000 x sleep(0.1) with 2 worker processes
  2 single submit, 16 clients; p99 at a steady 200 req/s    6 GET /jobs p99 at 200k rows; /metrics p99 at 10k queued
  3 batch submit of 500 jobs                                 7 peak RSS of a web worker and of an rqworker
  4 latency at a steady 200 jobs/s with 2 workers

Every loop is bounded: drains stop at --drain-cap / --io-cap seconds and report the rate measured until
then (the table says "partial n/N"), so the default run stays under 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from common import free_port, percentile, redis_server  # bench/ is on sys.path: scripts run as python bench/NAME.py

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


# --------------------------------------------------------------------------- small helpers


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


def postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
    except OSError:
        return False
    try:
        import psycopg

        with psycopg.connect(PG_BASE + "postgres", connect_timeout=3):
            return True
    except Exception as error:  # noqa: BLE001 - any failure means: use SQLite
        log(f"PostgreSQL on 127.0.0.1:5432 refused the bench ({error.__class__.__name__}); using SQLite")
        return False


# --------------------------------------------------------------------------- HTTP client and load shapes


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


# --------------------------------------------------------------------------- the processes


class Stack:
    """Everything the benchmark starts: Redis, the database, web servers, workers. stop_all() in finally."""

    def __init__(self, args: argparse.Namespace, sizes: dict) -> None:
        self.args = args
        self.sizes = sizes
        self.workdir = Path(tempfile.mkdtemp(prefix="sentinelflow-bench-"))
        self.procs: list[subprocess.Popen] = []
        self.redis_port, self.web_port, self.ref_port = free_port(), free_port(), free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.pg_database: str | None = None
        if args.db == "postgres":
            self.pg_database = f"sentinelflow_bench_{secrets.token_hex(4)}"
            self.database_url = PG_BASE + self.pg_database
        else:
            self.database_url = f"sqlite:///{self.workdir / 'db.sqlite3'}"
        self.web: subprocess.Popen | None = None
        self.ref: subprocess.Popen | None = None
        self.redis = None
        self.batch_status: int | None = None  # what POST /jobs/batch answered to the probe
        self.sf_http = HttpClient(self.web_port, {"X-API-Key": API_KEY})
        self.ref_http = HttpClient(self.ref_port)
        self.worker_serial = itertools.count(1)

    # ---- environment

    def base_env(self) -> dict[str, str]:
        # WORKER_CONCURRENCY and the like come only from --worker-args, so that a run says what it ran.
        drop = {"TESTING", "GUNICORN_CMD_ARGS", "DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR"}
        drop |= {"WORKER_CONCURRENCY", "QUEUES", "RQ_RESULT_TTL", "DB_CONN_MAX_AGE", "WEB_CONCURRENCY"}
        return {k: v for k, v in os.environ.items() if k not in drop}

    def app_env(self) -> dict[str, str]:
        env = self.base_env()
        env.update(
            DEBUG="0",
            SECRET_KEY="bench",
            API_KEY=API_KEY,
            REDIS_URL=self.redis_url,
            DATABASE_URL=self.database_url,
            THROTTLE_RATE_KEY="1000000/s",
            THROTTLE_RATE_ANON="1000000/s",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL="WARNING",
        )
        return env

    # ---- process control

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        logfile = self.workdir / f"{name}.log"
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc.bench_name = name  # type: ignore[attr-defined]
        proc.bench_log = logfile  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def tail(self, proc: subprocess.Popen, lines: int = 15) -> str:
        try:
            text = Path(proc.bench_log).read_text(errors="replace")  # type: ignore[attr-defined]
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, procs: list[subprocess.Popen], timeout: float = 10) -> None:
        """SIGTERM (warm shutdown: a worker finishes its job), then SIGKILL whatever is left of each
        process group this benchmark created (work horses included)."""
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{proc.bench_name} did not stop on SIGTERM; SIGKILL")  # type: ignore[attr-defined]
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group id is its pid
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if proc in self.procs:
                self.procs.remove(proc)

    def stop_all(self) -> None:
        self.stop(list(reversed(self.procs)))

    # ---- start-up

    def start_redis(self) -> None:
        self.spawn(
            "redis",
            [redis_server(), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            self.base_env(),
        )
        from redis import Redis

        self.redis = Redis.from_url(self.redis_url)

        def answers() -> bool:
            try:
                return bool(self.redis.ping())
            except Exception:  # noqa: BLE001
                return False

        wait_until(answers, 10, "redis-server")

    def create_database(self) -> None:
        if self.pg_database is None:
            return
        import psycopg

        with psycopg.connect(PG_BASE + "postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.pg_database}"')
        log(f"created PostgreSQL database {self.pg_database}")

    def drop_database(self) -> None:
        if self.pg_database is None:
            return
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up yet
            pass
        import psycopg

        with psycopg.connect(PG_BASE + "postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')
        log(f"dropped PostgreSQL database {self.pg_database}")

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env=self.app_env(),
            check=True,
            timeout=300,
        )

    def setup_django(self) -> None:
        """The bench process reads and writes the bench database itself (counts, timings, bulk rows)."""
        env = self.app_env()
        os.environ.update({k: env[k] for k in ("DEBUG", "SECRET_KEY", "API_KEY", "REDIS_URL", "DATABASE_URL")})
        os.environ.update(LOG_LEVEL="WARNING")
        os.environ.pop("TESTING", None)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        os.environ["DJANGO_SETTINGS_MODULE"] = "sentinelflow_site.settings"
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()

    def start_web(self) -> None:
        prom = self.workdir / "prom"
        prom.mkdir(exist_ok=True)
        env = self.app_env() | {
            "BIND": f"127.0.0.1:{self.web_port}",
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(prom),
        }
        self.web = self.spawn(
            "web",
            [sys.executable, "-m", "gunicorn", "-c", "sentinelflow_site/gunicorn.conf.py"]
            + ["sentinelflow_site.wsgi:application"],
            env,
        )
        self._wait_http(self.web, self.sf_http, "GET", "/healthz", {200})

    def start_ref(self) -> None:
        env = self.base_env() | {
            "DJANGO_SETTINGS_MODULE": "bench.raw_rq.settings",
            "REDIS_URL": self.redis_url,
            "RAW_SUBMIT_QUEUE": RAW_SUBMIT_QUEUE,
        }
        self.ref = self.spawn(
            "ref-web",
            [sys.executable, "-m", "gunicorn", "-w", "2", "--worker-class", "sync"]
            + ["-b", f"127.0.0.1:{self.ref_port}", "bench.raw_rq.wsgi:application"],
            env,
        )
        self._wait_http(self.ref, self.ref_http, "GET", "/jobs", {405})

    def _wait_http(self, proc: subprocess.Popen, client: HttpClient, method: str, path: str, ok: set[int]) -> None:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.bench_name} exited at start:\n{self.tail(proc)}")  # type: ignore[attr-defined]
            if client.request(method, path)[0] in ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.bench_name} did not answer {path}:\n{self.tail(proc)}")  # type: ignore[attr-defined]
            time.sleep(0.2)

    # ---- workers

    def start_sf_workers(self, count: int, extra: list[str]) -> list[subprocess.Popen]:
        extra_env, extra_args = split_worker_args(extra)
        # No PROMETHEUS_MULTIPROC_DIR: workers write no web metrics (as scripts/run.sh).
        env = self.app_env() | extra_env
        procs = []
        for _ in range(count):
            name = f"bench-sf-{next(self.worker_serial)}-{secrets.token_hex(3)}"
            argv = [sys.executable, "manage.py", "rqworker", *SF_QUEUES, "--name", name, *extra_args]
            proc = self.spawn(name, argv, env)
            proc.worker_name = name  # type: ignore[attr-defined]
            procs.append(proc)
        return procs

    def start_raw_workers(self, count: int, worker_class: str, queue: str = RAW_QUEUE) -> list[subprocess.Popen]:
        procs = []
        for _ in range(count):
            name = f"bench-raw-{next(self.worker_serial)}-{secrets.token_hex(3)}"
            argv = [sys.executable, "-m", "rq.cli", "worker", "-u", self.redis_url, "--worker-class", worker_class]
            argv += ["-n", name, queue]
            proc = self.spawn(name, argv, self.base_env())
            proc.worker_name = name  # type: ignore[attr-defined]
            procs.append(proc)
        return procs

    def wait_registered(self, procs: list[subprocess.Popen], timeout: float = 60) -> float:
        """Wait until every worker process has registered with RQ (it dequeues right after); returns that
        moment. A process counts once it or one of its threads (a concurrent worker registers one RQ
        worker per thread, named <name>-<n>) is registered."""
        names = [p.worker_name for p in procs]  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout
        while True:
            keys = [k.decode().removeprefix("rq:worker:") for k in self.redis.smembers("rq:workers")]
            if all(any(k == n or k.startswith(f"{n}-") for k in keys) for n in names):
                return time.perf_counter()
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {proc.worker_name} exited at start:\n{self.tail(proc)}")  # type: ignore[attr-defined]
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not register within {timeout:g} s:\n{self.tail(procs[0])}")
            time.sleep(0.01)

    # ---- state between scenarios

    def reset(self) -> None:
        """Empty the jobs tables and FLUSHALL the private Redis (no worker may be running)."""
        from django.db import connection

        from jobs.models import Job, JobEvent

        job, event = Job._meta.db_table, JobEvent._meta.db_table
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"TRUNCATE {event}, {job} RESTART IDENTITY")
            else:
                cursor.execute(f"DELETE FROM {event}")
                cursor.execute(f"DELETE FROM {job}")
        self.redis.flushall()

    def count(self, **filters) -> int:
        from jobs.models import Job

        return Job.objects.filter(**filters).count()

    def status_counts(self) -> dict[str, int]:
        from django.db.models import Count

        from jobs.models import Job

        return {row["status"]: row["n"] for row in Job.objects.values("status").annotate(n=Count("id"))}


# --------------------------------------------------------------------------- submitting and draining


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


# --------------------------------------------------------------------------- result rows


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
    return f"default worker {getattr(stack, 'detected_modes', {}).get('default_worker_class', '?')}"


def drain_note(result: dict) -> str:
    if result.get("complete", True):
        return f"{result['seconds']:.1f} s"
    return f"partial {result['done']}/{result['total']} in {result['seconds']:.0f} s cap"


# --------------------------------------------------------------------------- scenarios


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
                ">= 0.8x" if procs == 2 else "",
                verdict(ratio(s["rate"], r["rate"]) >= 0.8) if procs == 2 else "",
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
            ">= 0.5x",
            verdict(r >= 0.5) if r is not None else "BLOCKED",
            note,
        )
    ]


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


def io_worker_args(stack: Stack) -> list[str]:
    chosen = stack.args.io_worker_args
    if chosen == "auto":
        found = stack.detected_modes.get("auto_io_args")
        return list(found) if found else shlex.split(stack.args.worker_args)
    if chosen == "none":
        return []
    return shlex.split(chosen)


def split_worker_args(tokens: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading NAME=VALUE tokens are environment variables for the worker (as with `env`); the rest
    are rqworker arguments: "WORKER_CONCURRENCY=16 --worker-class jobs.worker.ConcurrentWorker"."""
    env: dict[str, str] = {}
    rest = list(tokens)
    while rest and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", rest[0]):
        name, _, value = rest.pop(0).partition("=")
        env[name] = value
    return env, rest


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


def populate(stack: Stack, rows: int, queued: int) -> dict:
    """Put `rows` jobs in the table, a mix of statuses, types and queues, the newest `queued` of them queued.

    5,000 template rows go in through the ORM (bulk_create), then SQL copies of them (INSERT ... SELECT,
    new job ids) double the table up to rows - queued, then the queued rows go in through the ORM. Copying
    the model's own columns keeps this right when the app adds fields; it takes seconds, not a minute.
    """
    from django.db import connection
    from django.utils import timezone

    from jobs.models import Job

    types = ["echo", "echo", "echo", "sleep", "email", "webhook", "fail"]
    settled = ["succeeded"] * 14 + ["failed"] * 3 + ["cancelled"]
    began = time.perf_counter()
    now = timezone.now()

    def make(i: int) -> Job:
        created = now - timedelta(seconds=(rows - i) * 5)
        if i >= rows - queued:
            status, started, finished = "queued", None, None
        else:
            status = settled[i % len(settled)] if i % 97 else "started"
            started = created + timedelta(milliseconds=20)
            finished = None if status == "started" else started + timedelta(milliseconds=50)
        return Job(
            type=types[i % len(types)],
            payload={"n": i, "note": "bench row"},
            status=status,
            queue=SF_QUEUES[i % 3],
            attempts=0 if status == "queued" else 1,
            timeout=300,
            result={"n": i} if status == "succeeded" else None,
            error="Traceback (most recent call last):\nRuntimeError: bench failure" if status == "failed" else "",
            created_at=created,
            enqueued_at=created,
            started_at=started,
            finished_at=finished,
            submitted_by="api-key:bench",
        )

    settled_rows = rows - queued
    template = min(5000, settled_rows)
    Job.objects.bulk_create([make(i) for i in range(template)], batch_size=1000)
    table = Job._meta.db_table
    columns = [f.column for f in Job._meta.concrete_fields if f.column not in ("id", "job_id")]
    new_id = "gen_random_uuid()" if connection.vendor == "postgresql" else "lower(hex(randomblob(16)))"
    have = template
    with connection.cursor() as cursor:
        while have < settled_rows:
            take = min(have, settled_rows - have)
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}, job_id) "
                f"SELECT {', '.join(columns)}, {new_id} FROM {table} ORDER BY id LIMIT {take}"
            )
            have += take
    for start in range(settled_rows, rows, 5000):
        Job.objects.bulk_create([make(i) for i in range(start, min(rows, start + 5000))], batch_size=1000)
    return {"rows": Job.objects.count(), "queued": queued, "seconds": time.perf_counter() - began}


def scenario_6_scale(stack: Stack, data: dict) -> list[Row]:
    """200,000 rows: GET /jobs first page and a filtered page p99; /metrics with 10,000 queued p99."""
    from django.db import connection
    from rq import Queue, Worker
    from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

    from jobs import redis_store
    from jobs.models import Job
    from jobs.tasks import run_job

    rows, queued, reqs = stack.sizes["scale_rows"], stack.sizes["scale_queued"], stack.sizes["scale_requests"]
    stack.reset()
    fill = populate(stack, rows, queued)
    log(f"6: inserted {rows:,} rows in {fill['seconds']:.1f} s")
    table = Job._meta.db_table
    with connection.cursor() as cursor:  # what autovacuum would do soon after a bulk load
        cursor.execute(f"ANALYZE {table}")
    for name in SF_QUEUES:
        ids = [str(u) for u in Job.objects.filter(status="queued", queue=name).values_list("job_id", flat=True)]
        q = redis_store.queue(name)
        for start in range(0, len(ids), 1000):
            q.enqueue_many(
                [Queue.prepare_data(run_job, args=(i,), job_id=i, timeout=300) for i in ids[start : start + 1000]]
            )
    depth = sum(redis_store.queue(name).count for name in SF_QUEUES)

    def timed_get(path: str) -> list[float]:
        for _ in range(10):
            status, body = stack.sf_http.request("GET", path)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}: {body[:200]!r}")
        samples = []
        for _ in range(reqs):
            t = time.perf_counter()
            status, body = stack.sf_http.request("GET", path)
            samples.append((time.perf_counter() - t) * 1000)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}")
        return samples

    first_body = json.loads(stack.sf_http.request("GET", "/jobs")[1])
    filtered_body = json.loads(stack.sf_http.request("GET", "/jobs?status=failed&type=echo")[1])
    first = timed_get("/jobs")
    filtered = timed_get("/jobs?status=failed&type=echo")
    scrape_body = stack.sf_http.request("GET", "/metrics")[1].decode()
    depth_seen = sum(
        float(m.group(1)) for m in re.finditer(r'^jobs_queue_depth\{queue="[^"]+"\} (\S+)$', scrape_body, re.M)
    )
    scrape = timed_get("/metrics")

    columns = ", ".join(
        f.column for f in Job._meta.concrete_fields if f.column not in ("request_fingerprint", "budget_start")
    )

    def sql(where: str) -> list[float]:
        samples = []
        for _ in range(reqs + 10):
            t = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {columns} FROM {table} {where} ORDER BY id DESC LIMIT 50")
                cursor.fetchall()
            samples.append((time.perf_counter() - t) * 1000)
        return samples[10:]

    sql_first = sql("")
    sql_filtered = sql("WHERE status = 'failed' AND type = 'echo'")

    queues = redis_store.queues()

    def raw_stats() -> float:
        t = time.perf_counter()
        for q in queues:
            q.count  # noqa: B018 - each is a Redis call, as RQ dashboards make them
            StartedJobRegistry(queue=q).count  # noqa: B018
            FinishedJobRegistry(queue=q).count  # noqa: B018
            FailedJobRegistry(queue=q).count  # noqa: B018
        Worker.count(connection=stack.redis)
        return (time.perf_counter() - t) * 1000

    raw_scrape = [raw_stats() for _ in range(reqs)]
    stack.reset()
    data["6"] = {
        "populate": fill,
        "rq_queued": depth,
        "metrics_depth_seen": depth_seen,
        "first_page_results": len(first_body.get("results", [])),
        "filtered_page_results": len(filtered_body.get("results", [])),
        "list_first_ms": summary(first),
        "list_filtered_ms": summary(filtered),
        "metrics_ms": summary(scrape),
        "sql_first_ms": summary(sql_first),
        "sql_filtered_ms": summary(sql_filtered),
        "raw_rq_stats_ms": summary(raw_scrape),
    }
    log(
        f"6: list p99 {percentile(first, 0.99):.1f} ms, filtered {percentile(filtered, 0.99):.1f} ms, "
        f"metrics {percentile(scrape, 0.99):.1f} ms"
    )
    label = f"{rows // 1000}k rows"
    return [
        Row(
            "6 scale",
            f"GET /jobs p99, {label}",
            percentile(first, 0.99),
            percentile(sql_first, 0.99),
            "ms",
            None,
            "<= 50 ms",
            verdict(percentile(first, 0.99) <= 50),
            f"ref: raw SQL LIMIT 50 in-process; p50 {statistics.median(first):.1f} ms",
        ),
        Row(
            "6 scale",
            "GET /jobs?status=failed&type=echo p99",
            percentile(filtered, 0.99),
            percentile(sql_filtered, 0.99),
            "ms",
            None,
            "<= 50 ms",
            verdict(percentile(filtered, 0.99) <= 50),
            f"{len(filtered_body.get('results', []))} results; p50 {statistics.median(filtered):.1f} ms",
        ),
        Row(
            "6 scale",
            f"GET /metrics p99, {depth:,} queued",
            percentile(scrape, 0.99),
            percentile(raw_scrape, 0.99),
            "ms",
            None,
            "<= 100 ms",
            verdict(percentile(scrape, 0.99) <= 100),
            f"ref: RQ stats calls in-process; depth in scrape {depth_seen:,.0f}",
        ),
    ]


def web_memory(stack: Stack) -> dict:
    if stack.web is None:
        return {}
    try:
        children = psutil.Process(stack.web.pid).children()
    except psutil.Error:
        return {}
    per_worker = {child.pid: vm_hwm_mb(child.pid) for child in children}
    return {"master_vmhwm_mb": vm_hwm_mb(stack.web.pid), "workers_vmhwm_mb": per_worker}


def scenario_7_memory(stack: Stack, data: dict) -> list[Row]:
    """Peak RSS of a gunicorn web worker and of an rqworker (with its work horses), from scenario 1."""
    sampled = data.get("memory_worker_sampler", {})
    web = data.get("memory_web_after_1", {})
    worker_mb = sampled.get("peak_tree_mb")
    web_mb = max(filter(None, (web.get("workers_vmhwm_mb") or {}).values()), default=None)
    io = data.get("memory_io_worker_sampler")
    data["7"] = {"worker": sampled, "web_after_1": web, "web_end": web_memory(stack), "io_worker": io}
    rows = [
        Row(
            "7 memory",
            "rqworker peak (RSS + horse USS)",
            worker_mb,
            None,
            "MB",
            None,
            "<= 120 MB",
            verdict(worker_mb <= 120) if worker_mb else "BLOCKED",
            f"main RSS peak {sampled.get('peak_main_rss_mb', 0):.0f} MB, horse RSS peak "
            f"{sampled.get('peak_child_rss_mb', 0):.0f} MB / USS {sampled.get('peak_child_uss_mb', 0):.0f} MB"
            if sampled
            else "needs scenario 1",
        ),
        Row(
            "7 memory",
            "gunicorn web worker VmHWM",
            web_mb,
            None,
            "MB",
            None,
            "<= 150 MB",
            verdict(web_mb <= 150) if web_mb else "BLOCKED",
            f"master {web.get('master_vmhwm_mb') or 0:.0f} MB" if web else "needs scenario 1",
        ),
    ]
    if io and io.get("peak_tree_mb"):
        rows.append(
            Row(
                "7 memory",
                "rqworker peak in scenario 5",
                io["peak_tree_mb"],
                None,
                "MB",
                note=f"{' '.join(io['worker_args']) or 'default worker'}; for information",
            )
        )
    return rows


SCENARIOS = {
    "1": scenario_1_drain,
    "2": scenario_2_submit,
    "3": scenario_3_batch,
    "4": scenario_4_latency,
    "5": scenario_5_io,
    "6": scenario_6_scale,
    "7": scenario_7_memory,
}


# --------------------------------------------------------------------------- worker modes


CONCURRENT_NAME = re.compile(r"thread|concurren|async|gevent|green|pool|coroutine", re.I)
AUTO_CONCURRENCY = 16  # what --io-worker-args auto asks of a concurrency setting: 16 jobs in flight per process


def detect_worker_modes(stack: Stack) -> dict:
    """Look for a concurrent worker mode the app exposes: a WORKER_CONCURRENCY-like setting, a public
    RQ worker class in jobs/ whose name says so, or rqworker options beyond django-rq's own.
    `auto_io_args` is what --io-worker-args auto uses for scenario 5."""
    from django.conf import settings

    found: dict = {"worker_classes": [], "rqworker_options": [], "commands": []}
    for path in sorted((ROOT / "jobs").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        text = path.read_text(errors="replace")
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for match in re.finditer(r"^class ([A-Za-z]\w*)\(([^)]*Worker[^)]*)\)", text, re.M):
            found["worker_classes"].append(f"{module}.{match.group(1)}")
    found["default_worker_class"] = getattr(settings, "RQ", {}).get("WORKER_CLASS") or "rq.worker.Worker (fork)"
    found["settings"] = sorted(k for k in dir(settings) if k.isupper() and "WORKER" in k)
    settings_source = (ROOT / "sentinelflow_site" / "settings.py").read_text(errors="replace")
    concurrency_env = re.findall(r"[\"'](\w*WORKER_CONCURRENCY\w*)[\"']", settings_source)
    found["concurrency_env"] = sorted(set(concurrency_env))
    commands = ROOT / "jobs" / "management" / "commands"
    found["commands"] = sorted(p.stem for p in commands.glob("*.py") if "worker" in p.stem)
    try:
        help_text = subprocess.run(
            [sys.executable, "manage.py", "rqworker", "--help"],
            cwd=ROOT,
            env=stack.app_env(),
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except subprocess.TimeoutExpired:
        help_text = ""
    found["rqworker_options"] = sorted(set(re.findall(r"(--[\w-]*(?:concurren|thread|pool|async)[\w-]*)", help_text)))
    auto: list[str] | None = None
    concurrent_classes = [c for c in found["worker_classes"] if CONCURRENT_NAME.search(c.rsplit(".", 1)[-1])]
    if found["concurrency_env"]:
        auto = [f"{found['concurrency_env'][0]}={AUTO_CONCURRENCY}"]
    elif found["rqworker_options"]:
        auto = [found["rqworker_options"][0], str(AUTO_CONCURRENCY)]
    elif concurrent_classes:
        auto = ["--worker-class", concurrent_classes[0]]
    found["auto_io_args"] = auto
    return found


# --------------------------------------------------------------------------- output


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


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], help="default: postgres if 127.0.0.1:5432 answers")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", default="", help="comma-separated scenarios, e.g. 1,3 (7 needs 1: added)")
    parser.add_argument(
        "--worker-args",
        default=os.environ.get("BENCH_WORKER_ARGS", ""),
        help='extra arguments for every sentinelflow rqworker, e.g. "--worker-class X" (env BENCH_WORKER_ARGS)',
    )
    parser.add_argument(
        "--io-worker-args",
        default=os.environ.get("BENCH_IO_WORKER_ARGS", "auto"),
        help="rqworker arguments for scenario 5; 'auto' uses a detected concurrent mode, else --worker-args; "
        "'none' forces the default worker (env BENCH_IO_WORKER_ARGS)",
    )
    parser.add_argument("--drain-cap", type=float, help="seconds each drain phase of scenario 1 may run")
    parser.add_argument("--io-cap", type=float, help="seconds each drain of scenario 5 may run")
    args = parser.parse_args()
    if args.db is None:
        args.db = "postgres" if postgres_answers() else "sqlite"
    selected = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in selected if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    if "7" in selected and "1" not in selected:
        selected.insert(0, "1")
    selected = sorted(set(selected), key=int)
    sizes = SIZES["quick" if args.quick else "full"]

    stack = Stack(args, sizes)
    rows: list[Row] = []
    data: dict = {}
    errors: dict[str, str] = {}
    load: dict[str, dict] = {}  # the machine is shared: the load averages say how noisy each scenario was
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log(f"sentinelflow bench: db={args.db} sizes={'quick' if args.quick else 'full'} scenarios={','.join(selected)}")
    try:
        stack.start_redis()
        stack.create_database()
        stack.migrate()
        stack.setup_django()
        stack.detected_modes = detect_worker_modes(stack)  # type: ignore[attr-defined]
        log(f"worker modes found: {json.dumps(stack.detected_modes)}")  # type: ignore[attr-defined]
        stack.start_web()
        stack.start_ref()
        log(f"web on :{stack.web_port}, bare DRF+RQ on :{stack.ref_port}, redis on :{stack.redis_port}")
        for key in selected:
            log(f"scenario {key}: {SCENARIOS[key].__doc__.splitlines()[0]}")
            load[key] = {"before": os.getloadavg()}
            try:
                rows += SCENARIOS[key](stack, data)
            except Exception as error:  # noqa: BLE001 - one broken scenario must not lose the others
                errors[key] = "".join(traceback.format_exception(error))
                log(f"scenario {key} FAILED: {error}")
                rows.append(Row(key, "error", None, None, "", verdict="BLOCKED", note=str(error).splitlines()[0]))
                for proc in [p for p in stack.procs if p.bench_name.startswith("bench-")]:  # type: ignore[attr-defined]
                    stack.stop([proc])
                try:
                    stack.reset()
                except Exception:  # noqa: BLE001
                    pass
            load[key]["after"] = os.getloadavg()
    finally:
        stack.stop_all()
        try:
            stack.drop_database()
        finally:
            shutil.rmtree(stack.workdir, ignore_errors=True)

    wall = time.monotonic() - START
    print(f"sentinelflow vs raw RQ — db {args.db}, {'quick' if args.quick else 'full'} sizes, {os.cpu_count()} CPUs")
    table = print_table(rows)
    print(f"total wall time {wall:.0f} s; 1-min load average per scenario (before/after): ", end="")
    print(", ".join(f"{k}: {v['before'][0]:.1f}/{v.get('after', (0,))[0]:.1f}" for k, v in load.items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "run",
        "when": stamp,
        "db": args.db,
        "quick": args.quick,
        "scenarios": selected,
        "worker_args": args.worker_args,
        "io_worker_args": args.io_worker_args,
        "detected_worker_modes": getattr(stack, "detected_modes", None),
        "batch_probe_status": stack.batch_status,
        "sizes": sizes,
        "cpus": os.cpu_count(),
        "wall_seconds": wall,
        "rows": [asdict(r) for r in rows],
        "table": table,
        "data": data,
        "load_average": load,
        "errors": errors,
    }
    path = RESULTS / f"run-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"saved {path.relative_to(ROOT)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
