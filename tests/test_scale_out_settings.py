"""Settings for several hosts: Redis Sentinel (REDIS_SENTINELS ...) and a multi-host DATABASE_URL.

Each case loads the settings in a fresh interpreter with its own environment, as a process would start.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

SHOW = """
import json
from django.conf import settings
from jobs import redis_store, worker
cache = settings.CACHES["default"]
print(json.dumps({
    "location": cache["LOCATION"],
    "options": {k: v for k, v in cache["OPTIONS"].items() if k != "CONNECTION_POOL_KWARGS"},
    "sentinels": settings.REDIS_SENTINELS,
    "master": settings.REDIS_SENTINEL_MASTER,
    "database": settings.DATABASES["default"],
    "worker_log": worker.redis_url_for_logs(),
}, default=str))
"""


def load_settings(code: str = SHOW, **env: str) -> subprocess.CompletedProcess:
    environment = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "sentinelflow_site.settings",
        "ENV_FILE": "/dev/null",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def shown(**env: str) -> dict:
    result = load_settings(**env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_without_sentinels_redis_url_keeps_its_meaning():
    loaded = shown(REDIS_URL="redis://:secret@redis.internal:6380/2")

    assert loaded["location"] == "redis://:secret@redis.internal:6380/2"
    assert "CONNECTION_FACTORY" not in loaded["options"]
    assert loaded["sentinels"] == []


def test_sentinels_make_the_cache_pool_follow_the_primary_of_the_service():
    loaded = shown(
        REDIS_URL="redis://:data-pass@ignored-host:6379/3",
        REDIS_SENTINELS="10.0.0.1:26379, sentinel-2.internal:26380,[fd00::3]:26381",
        REDIS_SENTINEL_MASTER="jobs-primary",
        REDIS_SENTINEL_PASSWORD="sentinel-pass",
    )

    # The service name stands where the host was; the database number and the data nodes' password stay.
    assert loaded["location"] == "redis://:data-pass@jobs-primary/3"
    assert loaded["options"]["CONNECTION_FACTORY"] == "django_redis.pool.SentinelConnectionFactory"
    assert loaded["options"]["SENTINELS"] == [["10.0.0.1", 26379], ["sentinel-2.internal", 26380], ["fd00::3", 26381]]
    assert loaded["options"]["SENTINEL_KWARGS"]["password"] == "sentinel-pass"
    assert loaded["master"] == "jobs-primary"
    # The worker's log names the sentinels, never a password.
    assert "jobs-primary via 10.0.0.1:26379" in loaded["worker_log"]
    assert "data-pass" not in loaded["worker_log"]


def test_the_service_name_defaults_to_mymaster_and_the_sentinel_password_is_optional():
    loaded = shown(REDIS_URL="redis://localhost:6379/0", REDIS_SENTINELS="127.0.0.1:26379")

    assert loaded["location"] == "redis://mymaster/0"
    assert "password" not in loaded["options"]["SENTINEL_KWARGS"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REDIS_SENTINELS", "sentinel-1", "REDIS_SENTINELS must be comma-separated host:port pairs"),
        ("REDIS_SENTINELS", "sentinel-1:0", "REDIS_SENTINELS must be comma-separated host:port pairs"),
        ("REDIS_SENTINELS", "sentinel-1:70000", "REDIS_SENTINELS must be comma-separated host:port pairs"),
        ("REDIS_SENTINELS", "evil host:26379", "REDIS_SENTINELS must be comma-separated host:port pairs"),
        ("REDIS_SENTINEL_MASTER", "my master/0", "REDIS_SENTINEL_MASTER must be a Sentinel service name"),
    ],
)
def test_bad_sentinel_settings_are_refused_naming_the_variable(variable, value, message):
    env = {"REDIS_SENTINELS": "127.0.0.1:26379", variable: value}

    result = load_settings(**env)

    assert result.returncode != 0
    assert message in result.stderr


def test_a_unix_socket_redis_url_cannot_go_with_sentinels():
    result = load_settings(REDIS_URL="unix:///run/redis.sock", REDIS_SENTINELS="127.0.0.1:26379")

    assert result.returncode != 0
    assert "REDIS_URL must be a redis:// or rediss:// URL when REDIS_SENTINELS is set" in result.stderr


def test_a_multi_host_database_url_becomes_libpq_host_and_port_lists():
    loaded = shown(
        DATABASE_URL="postgres://app:p%40ss@db-1.internal:5432,db-2.internal:5433,[fd00::7]/jobs"
        "?target_session_attrs=read-write"
    )

    database = loaded["database"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert database["HOST"] == "db-1.internal,db-2.internal,fd00::7"
    assert database["PORT"] == "5432,5433,5432"
    assert (database["USER"], database["PASSWORD"], database["NAME"]) == ("app", "p@ss", "jobs")
    assert database["OPTIONS"]["target_session_attrs"] == "read-write"
    assert database["OPTIONS"]["connect_timeout"] == 5


def test_a_bad_host_in_a_multi_host_database_url_is_refused():
    result = load_settings(DATABASE_URL="postgres://app@db-1:5432,db 2:5432/jobs")

    assert result.returncode != 0
    assert "DATABASE_URL is not a valid database URL" in result.stderr


def postgres_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_a_multi_host_database_url_connects_to_the_host_that_takes_writes():
    if not postgres_answers():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL does not answer on 127.0.0.1:5432 (CI starts it)")
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused_port = closed.getsockname()[1]  # nothing listens there once closed
    query = (
        "from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        "    cursor.execute('SELECT pg_is_in_recovery(), inet_server_port()')\n"
        "    print(cursor.fetchone())\n"
    )

    result = load_settings(
        query,
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{refused_port},127.0.0.1:5432/postgres"
        "?target_session_attrs=read-write",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(False, 5432)"  # the first host refused; libpq went on to the primary
