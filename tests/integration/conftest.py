"""Fixtures that run the real product and talk to it over HTTP only.

The session starts a private redis-server, a fresh database (a new PostgreSQL
database when DATABASE_URL names a PostgreSQL server, a temporary SQLite file
otherwise), migrates it with `manage.py migrate`, and serves the app with
gunicorn. Each test starts its own `manage.py rqworker` processes. Every
process is started in a session of its own and stopped by its id at
teardown, together with whatever it forked (gunicorn workers, RQ work horses
and scheduler processes), whether the test passed or not. Process output goes
to log files, which are attached to the report of a failing test.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from sentinelflow_site.processes import free_port, redis_server_command

from .harness import (
    LOG_TAIL_CHARS,
    REPO_ROOT,
    SESSION_LOGS,
    TEST_LOGS,
    Api,
    Stack,
    Workers,
    connect_admin,
    read_log,
    spawn,
    stop,
    wait_healthy,
    wait_redis,
)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("integration-logs")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[str]:

    port = free_port()
    data_dir = tmp_path_factory.mktemp("redis")
    args = redis_server_command(port, "--daemonize", "no", data_dir=data_dir)
    process = spawn("redis-server", args, env=dict(os.environ), log_dir=log_dir)
    SESSION_LOGS.append(("redis-server", process.log))
    try:
        wait_redis(process, port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith("postgres"):
        path = tmp_path_factory.mktemp("db") / "sentinelflow.sqlite3"
        yield f"sqlite:///{path}"  # an absolute path: sqlite:////tmp/...
        return

    from psycopg import sql

    name = f"sentinelflow_it_{secrets.token_hex(6)}"
    with connect_admin(server_url) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        with connect_admin(server_url) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def stack(redis_url: str, database_url: str, log_dir: Path) -> Iterator[Stack]:
    port = free_port()
    stack = Stack(base_url=f"http://127.0.0.1:{port}", redis_url=redis_url, database_url=database_url, log_dir=log_dir)

    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=REPO_ROOT,
        env=stack.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    (log_dir / "migrate.log").write_text(migrate.stdout + migrate.stderr)
    if migrate.returncode != 0:
        pytest.fail(f"manage.py migrate failed ({migrate.returncode}):\n{migrate.stdout}\n{migrate.stderr}")

    args = [sys.executable, "-m", "gunicorn", "sentinelflow_site.wsgi:application", "-b", f"127.0.0.1:{port}"]
    args += ["-w", "2", "--graceful-timeout", "5", "--access-logfile", "-", "--no-control-socket"]
    web = spawn("gunicorn", args, env=stack.env(), log_dir=log_dir)
    SESSION_LOGS.append(("gunicorn", web.log))
    try:
        wait_healthy(web, stack.base_url)
        yield stack
    finally:
        stop(web)


@pytest.fixture
def workers(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Workers]:
    workers = Workers(stack, request.node)
    try:
        yield workers
    finally:
        workers.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the output of the product's processes to the report of a failing test."""
    report = yield
    if report.failed:
        for title, path in [*SESSION_LOGS, *item.stash.get(TEST_LOGS, [])]:
            report.sections.append((f"{title} log ({path})", read_log(path, LOG_TAIL_CHARS)))
    return report


@pytest.fixture
def api(stack: Stack, workers: Workers) -> Iterator[Api]:
    # Depends on `workers` so that it is torn down first: unfinished jobs are cancelled while workers still run.
    client = Api(stack.base_url)
    try:
        yield client
    finally:
        client.cancel_unfinished()
        client.session.close()
