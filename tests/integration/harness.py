"""The harness of the integration tests: processes, the product's HTTP API, polling."""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from sentinelflow_site.processes import child_environment, start_process, stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "it-key"
QUEUES = ("high", "default", "low")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.1
LOG_TAIL_CHARS = 6000

# (title, path) of the logs of the session's long-lived processes; shown when any test fails.
SESSION_LOGS: list[tuple[str, Path]] = []


# --------------------------------------------------------------------------- processes


@dataclass
class Process:
    """A subprocess started by these fixtures, as the leader of a new session, its output in `log`."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return read_log(self.log)


def read_log(path: Path, limit: int | None = None) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    if limit is not None and len(text) > limit:
        return "...\n" + text[-limit:]
    return text


def spawn(name: str, args: list[str], *, env: dict[str, str], log_dir: Path) -> Process:
    log = log_dir / f"{name}.log"
    popen = start_process(args, env=env, cwd=REPO_ROOT, log=log, die_with_parent=True)
    return Process(name=name, popen=popen, log=log)


def stop(process: Process, *, signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)) -> None:
    """Stop `process` by its pid: each signal in turn, then SIGKILL; then kill anything left in its session."""
    stop_process(process.popen, signals=signals, timeout=STOP_TIMEOUT)


def wait_until(condition: Callable[[], Any], *, timeout: float, message: Callable[[], str]) -> Any:
    """Call `condition` until it returns something truthy; fail with `message()` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s: {message()}", pytrace=False)
        time.sleep(POLL_INTERVAL)


def wait_answering(process: Process, probe: Callable[[], bool], *, errors: tuple[type[Exception], ...]) -> None:
    """Wait until `probe()` is true (its `errors` count as "not yet"); fail at once if `process` exits."""

    def answers() -> bool:
        if not process.alive():
            pytest.fail(f"{process.name} exited with {process.popen.returncode}:\n{process.output()}", pytrace=False)
        try:
            return probe()
        except errors:
            return False

    wait_until(answers, timeout=STARTUP_TIMEOUT, message=lambda: f"{process.name} never answered:\n{process.output()}")


def wait_healthy(process: Process, base_url: str) -> None:
    """Wait until the web server `process` answers GET /healthz with 200."""
    wait_answering(
        process,
        lambda: requests.get(f"{base_url}/healthz", timeout=2).status_code == 200,
        errors=(requests.RequestException,),
    )


def wait_redis(process: Process, port: int) -> None:
    """Wait until the redis-server `process` answers PING on `port`."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=1)
    try:
        wait_answering(process, lambda: bool(client.ping()), errors=(redis.RedisError,))
    finally:
        client.close()


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """The running product: where to reach it and how to configure more processes for it."""

    base_url: str
    redis_url: str
    database_url: str
    log_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        # child_environment drops TESTING (it would swap Redis for in-process fakeredis) and the metrics dir.
        env = child_environment(
            DEBUG="0",
            SECRET_KEY="integration-test-secret",
            API_KEY=API_KEY,
            REDIS_URL=self.redis_url,
            DATABASE_URL=self.database_url,
            RETRY_BACKOFF_BASE="1",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            # Tests poll hard from one address: throttling has its own unit tests.
            THROTTLE_RATE_KEY="100000/s",
            THROTTLE_RATE_ANON="100000/s",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env


def connect_admin(url: str):
    """An autocommit connection to the PostgreSQL server of `url`: its database, else the `postgres` one."""
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        return psycopg.connect(url, dbname="postgres", autocommit=True, connect_timeout=5)


TEST_LOGS = pytest.StashKey[list[tuple[str, Path]]]()


# --------------------------------------------------------------------------- workers


class Workers:
    """`manage.py rqworker` subprocesses of one test; all stopped at its end."""

    def __init__(self, stack: Stack, node: pytest.Item) -> None:
        self.stack = stack
        self.node = node
        self.processes: list[Process] = []

    def start(self, *, burst: bool = False, scheduler: bool = False, **env: str) -> Process:
        test = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.node.name)[:60]
        name = f"rqworker-{test}-{len(self.processes) + 1}-{secrets.token_hex(3)}"
        args = [sys.executable, "manage.py", "rqworker", *QUEUES, "--name", name]
        if burst:
            args.append("--burst")
        if scheduler:
            args.append("--with-scheduler")
        process = spawn(name, args, env=self.stack.env(**env), log_dir=self.stack.log_dir)
        self.processes.append(process)
        logs = self.node.stash.setdefault(TEST_LOGS, [])
        logs.append((name, process.log))
        return process

    def run_burst(self, *, scheduler: bool = False, timeout: float = 60, **env: str) -> Process:
        """Run a burst worker until it has drained the queues and exited; it must exit with 0."""
        process = self.start(burst=True, scheduler=scheduler, **env)
        try:
            process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(process, signals=(signal.SIGTERM, signal.SIGTERM))
            pytest.fail(f"burst worker still running after {timeout:.0f}s:\n{process.output()}", pytrace=False)
        assert process.popen.returncode == 0, (
            f"burst worker exited with {process.popen.returncode}:\n{process.output()}"
        )
        return process

    def stop_all(self) -> None:
        # A second SIGTERM is RQ's cold shutdown: it kills a work horse that is still running.
        for process in self.processes:
            stop(process, signals=(signal.SIGTERM, signal.SIGTERM))


# --------------------------------------------------------------------------- the HTTP client


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Api:
    """The product's HTTP API, as a client sees it."""

    base_url: str
    session: requests.Session = field(default_factory=requests.Session)
    submitted: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}{path}"

    def get(self, path: str, *, key: str | None = API_KEY, **params: Any) -> requests.Response:
        # With the key by default: anonymous readers get results and errors redacted.
        headers = {"X-API-Key": key} if key is not None else {}
        return self.session.get(self.url(path), params=params, headers=headers, timeout=10, allow_redirects=False)

    def post(
        self, path: str, body: Any = None, *, key: str | None = API_KEY, headers: dict[str, str] | None = None
    ) -> requests.Response:
        sent = {**({"X-API-Key": key} if key is not None else {}), **(headers or {})}
        return self.session.post(self.url(path), json=body, headers=sent, timeout=10, allow_redirects=False)

    def submit(self, **body: Any) -> dict[str, Any]:
        response = self.post("/jobs", body)
        assert response.status_code == 201, f"POST /jobs {body} -> {response.status_code}: {response.text}"
        job = response.json()
        self.submitted.append(job["job_id"])
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/jobs/{job_id}")
        assert response.status_code == 200, f"GET /jobs/{job_id} -> {response.status_code}: {response.text}"
        return response.json()

    def wait_for_job(
        self, job_id: str, condition: Callable[[dict[str, Any]], bool], *, timeout: float = 45, what: str = ""
    ) -> dict[str, Any]:
        """Poll GET /jobs/{job_id} until `condition(job)`; fail showing the last JSON seen."""
        seen: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            seen.update(self.job(job_id))
            return dict(seen) if condition(seen) else None

        return wait_until(check, timeout=timeout, message=lambda: f"job {job_id} never {what}; last seen: {seen}")

    def wait_for_status(self, job_id: str, status: str, *, timeout: float = 45) -> dict[str, Any]:
        return self.wait_for_job(job_id, lambda job: job["status"] == status, timeout=timeout, what=f"became {status}")

    def metrics(self) -> Metrics:
        response = self.get("/metrics")
        assert response.status_code == 200, f"GET /metrics -> {response.status_code}: {response.text[:500]}"
        samples = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return Metrics(samples)

    def cancel_unfinished(self) -> None:
        """Cancel what a test left queued, scheduled or running, so that no later test's worker picks it up."""
        for job_id in self.submitted:
            try:
                if self.job(job_id)["status"] not in TERMINAL_STATUSES:
                    self.post(f"/jobs/{job_id}/cancel")
            except (AssertionError, requests.RequestException):
                pass


@dataclass(frozen=True)
class Metrics:
    """One scrape of /metrics: sample name and labels -> value."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples
