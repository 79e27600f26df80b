"""Management commands and start-up configuration, run as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in {"TESTING", "DEBUG", "SECRET_KEY"}}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "SECRET_KEY"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"DEBUG": "1", "MAX_BODY_BYTES": "lots"}, "MAX_BODY_BYTES"),
        ({"DEBUG": "1", "REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"DEBUG": "1", "DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL"),
        ({"DEBUG": "1", "SENTINEL_INTERVAL": "-1"}, "SENTINEL_INTERVAL"),
    ],
)
def test_bad_configuration_fails_at_start_with_one_line_naming_the_variable(env, variable):
    result = manage("check", **env)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]


def test_manage_py_test_runs_the_pytest_suite(tmp_path):
    # Its own SQLite database: on PostgreSQL the inner run would otherwise drop this run's test database.
    result = manage("test", "tests/test_health.py", "-v", "0", TESTING="1", DATABASE_URL=f"sqlite:///{tmp_path}/t.db")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
