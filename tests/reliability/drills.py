"""The drills' stack: a private redis-server, web servers, workers and sentinels, and ways to break them.

Built on the integration harness (spawn, stop, wait_until, Api) and sentinelflow_site.processes. The drills read
job outcomes straight from the database (one query for hundreds of jobs) and the RQ state
straight from Redis, and talk to the product over HTTP for everything else.
"""

from __future__ import annotations

import re
import secrets
import signal
import sqlite3
import sys
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from sentinelflow_site.processes import free_port, redis_server_command
from tests.integration.harness import (
    API_KEY,
    QUEUES,
    TEST_LOGS,
    Api,
    Process,
    Stack,
    spawn,
    stop,
    wait_healthy,
    wait_redis,
    wait_until,
)

SUBMIT_THREADS = 8
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class RedisServer:
    """A redis-server without persistence on a port of its own: killed and started again at the same address."""

    def __init__(self, drill: Drill) -> None:
        self.drill = drill
        self.port = free_port()
        self.data_dir = drill.tmp_path / "redis"
        self.data_dir.mkdir()
        self.process: Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=5)

    def start(self) -> None:
        self.starts += 1
        args = redis_server_command(self.port, "--daemonize", "no", data_dir=self.data_dir)
        process = self.drill.spawn(f"redis-server-{self.starts}", args, track=False)
        self.process = process
        wait_redis(process, self.port)

    def kill(self) -> None:
        """SIGKILL: everything in memory is gone (there is no persistence to come back from)."""
        if self.process is not None:
            stop(self.process, signals=(signal.SIGKILL,))
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def rq_state(self) -> dict[str, int]:
        """What RQ holds: the job hashes and the length of each queue."""
        client = self.client()
        try:
            state = {"rq:job:*": sum(1 for _ in client.scan_iter("rq:job:*", count=1000))}
            state.update({queue: client.llen(f"rq:queue:{queue}") for queue in QUEUES})
            return state
        finally:
            client.close()


class Drill:
    """One drill's processes and database; `close()` stops every process it started, by pid."""

    def __init__(
        self, *, node: pytest.Item, tmp_path: Path, log_dir: Path, database_url: str, capsys: pytest.CaptureFixture
    ) -> None:
        self.node = node
        self.tmp_path = tmp_path
        self.log_dir = log_dir
        self.database_url = database_url
        self.capsys = capsys
        self.slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", node.name)[:40]
        self.processes: list[Process] = []
        self.redis = RedisServer(self)

    # ----------------------------------------------------------------- processes

    def env(self, **extra: str) -> dict[str, str]:
        stack = Stack(base_url="", redis_url=self.redis.url, database_url=self.database_url, log_dir=self.log_dir)
        # The drills submit hundreds of jobs a second with one key: no throttling here.
        return stack.env(THROTTLE_RATE_KEY="1000000/s", THROTTLE_RATE_ANON="1000000/s", **extra)

    def spawn(self, name: str, args: list[str], *, track: bool = True, **env: str) -> Process:
        process = spawn(f"{self.slug}-{name}-{secrets.token_hex(2)}", args, env=self.env(**env), log_dir=self.log_dir)
        self.node.stash.setdefault(TEST_LOGS, []).append((name, process.log))
        if track:
            self.processes.append(process)
        return process

    def web(self, **env: str) -> Api:
        """A gunicorn serving the app (4 sync workers), once /healthz answers."""
        port = free_port()
        args = [sys.executable, "-m", "gunicorn", "sentinelflow_site.wsgi:application", "-b", f"127.0.0.1:{port}"]
        args += ["-w", "4", "--graceful-timeout", "5", "--no-control-socket"]
        process = self.spawn("gunicorn", args, **env)
        api = Api(f"http://127.0.0.1:{port}")
        wait_healthy(process, api.base_url)
        return api

    def worker(self, **env: str) -> Process:
        name = f"drill-{self.slug}-{secrets.token_hex(3)}"
        process = self.spawn("rqworker", [sys.executable, "manage.py", "rqworker", *QUEUES, "--name", name], **env)
        process.worker_name = name  # type: ignore[attr-defined]
        return process

    def sentinel(self, interval: float = 1.0) -> Process:
        return self.spawn("sentinel", [sys.executable, "manage.py", "sentinel", "--interval", str(interval)])

    def kill(self, process: Process) -> None:
        """SIGKILL the process and everything in its session (an RQ work horse, if any)."""
        stop(process, signals=(signal.SIGKILL,))

    def close(self) -> None:
        # Workers finish (or are killed) before the sentinels and web servers go; Redis last.
        for process in reversed(self.processes):
            stop(process, signals=(signal.SIGTERM, signal.SIGTERM))
        self.redis.stop()

    # ----------------------------------------------------------------- the API

    def submit_many(self, api: Api, bodies: Iterable[dict[str, Any]]) -> list[requests.Response]:
        """POST /jobs for each body, SUBMIT_THREADS at a time; the responses in order."""
        local = threading.local()

        def post(body: dict[str, Any]) -> requests.Response:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            return local.session.post(f"{api.base_url}/jobs", json=body, headers={"X-API-Key": API_KEY}, timeout=30)

        with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
            return list(pool.map(post, bodies))

    # ----------------------------------------------------------------- the database

    def jobs(self) -> dict[str, tuple[str, int]]:
        """job_id -> (status, attempts) of every job in the database."""
        query = "SELECT job_id, status, attempts FROM jobs_job"
        if self.database_url.startswith("sqlite"):
            with sqlite3.connect(self.database_url.removeprefix("sqlite:///"), timeout=20) as connection:
                rows = connection.execute(query).fetchall()
        else:
            import psycopg

            with psycopg.connect(self.database_url, connect_timeout=5) as connection:
                rows = connection.execute(query).fetchall()
        return {str(uuid.UUID(str(job_id))): (status, attempts) for job_id, status, attempts in rows}

    def wait_until_done(self, job_ids: list[str], *, timeout: float) -> dict[str, tuple[str, int]]:
        """Wait until every job in `job_ids` is terminal; fail naming the stuck ones."""
        seen: dict[str, tuple[str, int]] = {}

        def done() -> bool:
            seen.clear()
            seen.update(self.jobs())
            return all(seen.get(job_id, ("missing", 0))[0] in TERMINAL for job_id in job_ids)

        def stuck() -> str:
            left = {job_id: seen.get(job_id, ("missing", 0)) for job_id in job_ids}
            left = {job_id: state for job_id, state in left.items() if state[0] not in TERMINAL}
            return f"{len(left)} of {len(job_ids)} jobs not finished, e.g. {dict(list(left.items())[:5])}"

        wait_until(done, timeout=timeout, message=stuck)
        return {job_id: seen[job_id] for job_id in job_ids}

    # ----------------------------------------------------------------- the verdict

    def note(self, text: str) -> None:
        """A measurement for the record (drill-notes.log in the logs directory), not for the terminal."""
        with (self.log_dir / "drill-notes.log").open("a") as notes:
            notes.write(f"{self.slug}: {text}\n")

    def report(self, name: str, accepted: list[str], outcomes: dict[str, tuple[str, int]]) -> None:
        """Print the drill's one line, then fail if any accepted job did not succeed."""
        succeeded = sum(1 for job_id in accepted if outcomes.get(job_id, ("missing", 0))[0] == "succeeded")
        lost = len(accepted) - succeeded
        with self.capsys.disabled():
            print(f"\ndrill {name}: {len(accepted)} accepted, {succeeded} succeeded, {lost} lost", flush=True)
        assert lost == 0, {
            job_id: outcomes.get(job_id) for job_id in accepted if outcomes.get(job_id, ("",))[0] != "succeeded"
        }
