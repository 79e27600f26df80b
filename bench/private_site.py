"""A private sentinelflow site for the one-off PostgreSQL benchmarks (bench/prune.py, bench/labels.py): a
fresh database, migrated, a private redis-server, gunicorn on demand, and Django set up in this process to
fill the tables; everything stopped by pid and the database dropped on the way out."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.common import API_KEY, PG_BASE, ROOT, log
from sentinelflow_site.processes import (
    child_environment,
    free_port,
    redis_server_command,
    start_process,
    stop_process,
)


@dataclass
class Site:
    database_url: str
    env: dict[str, str]
    work: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def setup_django(self) -> None:
        """Django in this process, on the site's database (to fill it, or explain its queries)."""
        os.environ["DATABASE_URL"] = self.database_url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinelflow_site.settings")
        os.environ.setdefault("SECRET_KEY", self.env["SECRET_KEY"])
        import django

        django.setup()

    def start_web(self, workers: int = 2) -> str:
        """gunicorn with `workers` workers; its base URL once /healthz answers (at most 30 s)."""
        port = free_port()
        web = ["-m", "gunicorn", "sentinelflow_site.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", str(workers)]
        self.processes.append(start_process([sys.executable, *web], env=self.env, cwd=ROOT, log=self.work / "web.log"))
        base_url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if requests.get(base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        return base_url


@contextmanager
def private_site(name: str, secret_key: str) -> Iterator[Site]:
    """Create the PostgreSQL database `name`, start a private redis-server and migrate; on exit stop what was
    started and drop the database."""
    import psycopg

    with psycopg.connect(PG_BASE + "postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    redis_port = free_port()
    env = child_environment(
        DATABASE_URL=PG_BASE + name,
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        API_KEY=API_KEY,
        SECRET_KEY=secret_key,
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1",
        THROTTLE_RATE_ANON="100000/s",
        THROTTLE_RATE_KEY="100000/s",
        LOG_LEVEL="WARNING",
    )
    site = Site(database_url=PG_BASE + name, env=env, work=Path(tempfile.mkdtemp(prefix=f"sf-{name}-")))
    try:
        site.processes.append(start_process(redis_server_command(redis_port), env=env, log=site.work / "redis.log"))
        log("migrating")
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        yield site
    finally:
        for process in reversed(site.processes):
            stop_process(process)
        with psycopg.connect(PG_BASE + "postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
