"""Management commands and start-up configuration, run as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    # As on a fresh clone: no TESTING, DEBUG or SECRET_KEY; ENV_FILE=/dev/null (tests/testing_mode.py) unless given.
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
        ({"DEBUG": "1", "REDIS_URL": "redis://localhost:6379/abc"}, "REDIS_URL"),
        ({"DEBUG": "1", "REDIS_URL": "redis://localhost:port/0"}, "REDIS_URL"),
        ({"DEBUG": "1", "SENTINELFLOW_HANDLER_MODULES": "no.such.module"}, "SENTINELFLOW_HANDLER_MODULES"),
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


def test_manage_py_test_runs_the_pytest_suite_as_written_without_testing_set(tmp_path):
    # Its own SQLite database: on PostgreSQL the inner run would otherwise drop this run's test database.
    result = manage("test", "tests/test_health.py", "-v", "0", DATABASE_URL=f"sqlite:///{tmp_path}/t.db")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_redis_url_with_a_database_number_is_accepted():
    assert manage("check", DEBUG="1", REDIS_URL="redis://localhost:6379/3").returncode == 0


def write_dev_env(path: Path) -> str:
    """Run the function scripts/dev.sh runs on its first start; its message."""
    result = subprocess.run(
        ["bash", "-c", '. scripts/_dotenv.sh && write_dev_env "$1"', "_", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_dev_sh_writes_a_development_env_once_from_the_example(tmp_path):
    env_file = tmp_path / ".env"
    assert "wrote" in write_dev_env(env_file)
    first = env_file.read_text()
    values = dict(line.split("=", 1) for line in first.splitlines() if line and not line.startswith("#"))

    assert values.keys() == {"DEBUG", "SECRET_KEY"}
    assert values["DEBUG"] == "1"
    assert len(values["SECRET_KEY"]) >= 50
    # Every other variable of the example is there, commented out, to be changed by uncommenting it.
    example = [line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line]
    for name in example:
        assert f"# {name}=" in first or name in values, name
    assert write_dev_env(env_file) == ""  # the second run leaves it alone
    assert env_file.read_text() == first
    assert (env_file.stat().st_mode & 0o077) == 0  # the secret key is readable by its owner only


@pytest.fixture(scope="module")
def dev_env(tmp_path_factory) -> dict[str, str]:
    """What `./scripts/dev.sh` leaves behind: its .env, and a migrated database."""
    directory = tmp_path_factory.mktemp("dev-env")
    write_dev_env(directory / ".env")
    env = {"ENV_FILE": str(directory / ".env"), "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}"}
    assert manage("migrate", "-v", "0", **env).returncode == 0
    return env


@pytest.mark.parametrize(
    "command",
    [
        ["createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com"],
        ["create_api_key", "ci-pipeline", "--scope", "write"],
        ["rqworker", "--help"],
        ["sentinel", "--help"],
        ["runstack", "--help"],
    ],
)
def test_after_dev_sh_every_readme_command_works_as_printed(dev_env, command):
    result = manage(*command, **dev_env, DJANGO_SUPERUSER_PASSWORD="s3cret-pass!")

    assert result.returncode == 0, result.stdout + result.stderr


def test_real_environment_variables_override_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=1\nSECRET_KEY=from-the-file\nMAX_BODY_BYTES=lots\n")

    from_file = manage("check", ENV_FILE=str(env_file))
    overridden = manage("check", ENV_FILE=str(env_file), MAX_BODY_BYTES="2048")
    strict = manage("check", ENV_FILE=str(env_file), DEBUG="0", MAX_BODY_BYTES="2048")

    assert from_file.returncode == 2 and "MAX_BODY_BYTES" in from_file.stderr  # the file is read
    assert overridden.returncode == 0, overridden.stderr  # the environment wins
    assert strict.returncode == 0, strict.stderr  # DEBUG=0 from the environment; SECRET_KEY still from the file


def test_without_an_env_file_production_rules_stay(tmp_path):
    result = manage("check", ENV_FILE=str(tmp_path / "missing.env"))

    assert result.returncode == 2
    assert "SECRET_KEY is required when DEBUG=0" in result.stderr
