"""Fixtures of the fault drills: a private stack per drill, which the drill then breaks.

Each drill gets its own redis-server (on a port of its own, so that it can be killed and
started again at the same address), its own database (a copy of one migrated at the start
of the session: a SQLite file, or a PostgreSQL database cloned from a template when
DATABASE_URL names a PostgreSQL server), and starts the web servers, workers and sentinels
it needs. Every process is started in a session of its own and stopped by its pid at the
end of the drill, with whatever it forked, whether the drill passed or not.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from sentinelflow_site.processes import child_environment
from tests.integration.harness import LOG_TAIL_CHARS, REPO_ROOT, TEST_LOGS, connect_admin, read_log

from .drills import Drill


@pytest.fixture(scope="session")
def drill_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("drill-logs")


def _migrate(database_url: str, log: Path) -> None:
    env = child_environment(
        DEBUG="0", SECRET_KEY="drill-secret", DATABASE_URL=database_url, REDIS_URL="redis://127.0.0.1:1/0"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        pytest.fail(f"manage.py migrate failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def new_database(tmp_path_factory: pytest.TempPathFactory, drill_logs: Path) -> Iterator[Callable[[], str]]:
    """new_database() -> the URL of a fresh, migrated database (migrated once, then copied: a drill starts in ms)."""
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith("postgres"):
        directory = tmp_path_factory.mktemp("drill-db")
        template = directory / "template.sqlite3"
        _migrate(f"sqlite:///{template}", drill_logs / "migrate.log")

        def copy() -> str:
            path = directory / f"drill-{secrets.token_hex(4)}.sqlite3"
            with sqlite3.connect(template) as source, sqlite3.connect(path) as target:
                source.backup(target)
            return f"sqlite:///{path}"

        yield copy
        return

    from psycopg import sql

    def url_for(name: str) -> str:
        return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))

    prefix = f"sentinelflow_drill_{secrets.token_hex(4)}"
    template = f"{prefix}_template"
    created = [template]
    with connect_admin(server_url) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
    try:
        _migrate(url_for(template), drill_logs / "migrate.log")

        def clone() -> str:
            name = f"{prefix}_{len(created)}"
            with connect_admin(server_url) as connection:
                connection.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
                )
            created.append(name)
            return url_for(name)

        yield clone
    finally:
        with connect_admin(server_url) as connection:
            for name in reversed(created):
                connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def drill(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    drill_logs: Path,
    new_database: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Drill]:
    """A private stack (Redis started, database migrated); the drill adds web servers, workers and sentinels."""
    drill = Drill(node=request.node, tmp_path=tmp_path, log_dir=drill_logs, database_url=new_database(), capsys=capsys)
    try:
        drill.redis.start()
        yield drill
    finally:
        drill.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the output of the drill's processes to the report of a failing drill."""
    report = yield
    if report.failed:
        for title, path in item.stash.get(TEST_LOGS, []):
            report.sections.append((f"{title} log ({path})", read_log(path, LOG_TAIL_CHARS)))
    return report
