"""The processes the bench starts (Redis, the database, web servers, workers) and stops, all by pid."""

from __future__ import annotations

import argparse
import itertools
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import API_KEY, PG_BASE, RAW_QUEUE, RAW_SUBMIT_QUEUE, ROOT, SF_QUEUES, log, wait_until
from bench.loads import HttpClient
from sentinelflow_site.processes import (
    CHILD_ENV_DROPPED,
    child_environment,
    free_port,
    redis_server_command,
    start_process,
    stop_process,
)

# What --io-worker-args auto gives scenario 5's workers: the worker's thread mode (jobs.worker.ConcurrentWorker),
# 16 jobs in flight per process.
AUTO_IO_ARGS = ["WORKER_CONCURRENCY=16"]


def worker_modes() -> dict:
    """The sentinelflow worker modes a run uses: the default worker class, and what `auto` means for scenario 5."""
    from django.conf import settings

    return {"default_worker_class": settings.RQ["WORKER_CLASS"], "auto_io_args": AUTO_IO_ARGS}


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


def split_worker_args(tokens: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading NAME=VALUE tokens are environment variables for the worker (as with `env`); the rest
    are rqworker arguments: "WORKER_CONCURRENCY=16 --worker-class jobs.worker.ConcurrentWorker"."""
    env: dict[str, str] = {}
    rest = list(tokens)
    while rest and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", rest[0]):
        name, _, value = rest.pop(0).partition("=")
        env[name] = value
    return env, rest


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
        self.worker_modes: dict = {}  # worker_modes(), once Django is set up

    # ---- environment

    def base_env(self) -> dict[str, str]:
        # WORKER_CONCURRENCY and the like come only from --worker-args, so that a run says what it ran.
        drop = CHILD_ENV_DROPPED | {"GUNICORN_CMD_ARGS", "DJANGO_SETTINGS_MODULE"}
        drop |= {
            "WORKER_CONCURRENCY",
            "QUEUES",
            "RQ_RESULT_TTL",
            "DB_CONN_MAX_AGE",
            "WEB_CONCURRENCY",
            "THROTTLE_RATE_KEY",
        }
        # A developer's .env (DEBUG=1, ...) must not change what the bench measures.
        return child_environment(drop=drop, ENV_FILE=os.devnull)

    def app_env(self) -> dict[str, str]:
        env = self.base_env()
        env.update(
            DEBUG="0",
            SECRET_KEY="bench",
            API_KEY=API_KEY,
            REDIS_URL=self.redis_url,
            DATABASE_URL=self.database_url,
            # The per-key throttle is left at its default, off (the submit target is "with default
            # settings"; a rate, however high, costs a Redis round trip per request). Requests without
            # a key keep a budget by default: the bench's are set out of reach.
            THROTTLE_RATE_ANON="1000000/s",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL="WARNING",
        )
        return env

    # ---- process control

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        logfile = self.workdir / f"{name}.log"
        proc = start_process(argv, env=env, cwd=ROOT, log=logfile)
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
        """SIGTERM to all at once (warm shutdown: a worker finishes its job), then SIGKILL whatever is left
        of each one's session (work horses included)."""
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in procs:
            if not stop_process(proc, signals=(), timeout=deadline - time.monotonic()):
                log(f"{proc.bench_name} did not stop on SIGTERM; SIGKILL")  # type: ignore[attr-defined]
            if proc in self.procs:
                self.procs.remove(proc)

    def stop_all(self) -> None:
        self.stop(list(reversed(self.procs)))

    # ---- start-up

    def start_redis(self) -> None:
        self.spawn(
            "redis",
            redis_server_command(self.redis_port),
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
        os.environ.update(LOG_LEVEL="WARNING", ENV_FILE=os.devnull)
        os.environ.pop("TESTING", None)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        os.environ["DJANGO_SETTINGS_MODULE"] = "sentinelflow_site.settings"
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
                # CASCADE: the tables that point at jobs (dependencies, schedules' last job) go with them.
                cursor.execute(f"TRUNCATE {event}, {job} RESTART IDENTITY CASCADE")
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
