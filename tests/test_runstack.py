"""`manage.py runstack` brings the whole stack up on a machine with no Redis, and Ctrl-C takes it down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sentinelflow_site.processes import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def ignore_sigint() -> None:
    """What a shell does to a command it starts in the background (`runstack &`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_runstack_serves_runs_jobs_and_stops_everything_on_sigint_even_in_the_background(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"TESTING", "DEBUG", "SECRET_KEY", "REDIS_URL"}}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    log = open(tmp_path / "runstack.log", "w")
    stack = subprocess.Popen(
        [sys.executable, "manage.py", "runstack", "--port", str(port), "--embedded-redis"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=ignore_sigint,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy():
            try:
                return requests.get(f"{base}/healthz", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_for(healthy, 60, "the web server")
        output = (tmp_path / "runstack.log").read_text()
        assert "API key      dev-key" in output
        assert "(--embedded-redis)" in output  # the reason it was started
        assert "DEBUG=1 " in output  # no .env here (ENV_FILE=/dev/null): the hint says what other commands need
        assert "Redis is starting" not in output and "overcommit" not in output  # the server's own log is elsewhere
        redis_port = int(output.split("Started an embedded Redis at redis://127.0.0.1:")[1].split("/")[0])

        created = requests.post(
            f"{base}/jobs",
            json={"type": "email", "payload": {"to": "ops@example.com", "subject": "Hi", "body": "It works."}},
            headers={"X-API-Key": "dev-key"},
            timeout=5,
        )
        assert created.status_code == 201, created.text
        job_url = created.headers["Location"]

        job = wait_for(
            lambda: (
                (body := requests.get(job_url, headers={"X-API-Key": "dev-key"}, timeout=5).json())["status"]
                == "succeeded"
                and body
            ),
            30,
            "the email job to succeed",
        )
        assert job["result"] == {"sent": 1, "to": ["ops@example.com"]}
        metrics = requests.get(f"{base}/metrics", timeout=5).text
        assert 'jobs_submitted_total{type="email"} 1.0' in metrics
        assert 'jobs_succeeded_total{type="email"} 1.0' in metrics

        stack.send_signal(signal.SIGINT)
        assert stack.wait(timeout=30) == 0
        assert not port_open(port)
        assert not port_open(redis_port)
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()
        log.close()
