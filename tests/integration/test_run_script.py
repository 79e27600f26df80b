"""scripts/run.sh, the production-style stack: gunicorn in multiprocess mode and workers; SIGTERM stops all."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
import requests

from sentinelflow_site.processes import free_port, session_members

from .harness import Api, Process, Stack, spawn, stop, wait_until

pytestmark = pytest.mark.integration


def test_run_sh_serves_runs_jobs_sums_gunicorn_metrics_and_stops_on_sigterm(stack: Stack, tmp_path):
    process, api, port = start_run_sh(stack, tmp_path, name="run-sh", redis_db=8, workers=1)
    try:
        jobs = [api.submit(type="echo", payload={"n": n}) for n in range(10)]
        for job in jobs:
            api.wait_for_status(job["job_id"], "succeeded", timeout=30)

        # Requests spread over both gunicorn workers; multiprocess mode sums them in every scrape.
        def posts_counted() -> bool:
            return api.metrics().value("django_http_requests_total_by_method_total", method="POST") >= 10

        wait_until(posts_counted, timeout=10, message=lambda: "POSTs not summed over gunicorn workers")
        assert api.metrics().value("jobs_succeeded_total", type="echo") == 10

        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(timeout=30) == 0, process.output()
        assert_nothing_left(process, port)
    finally:
        stop(process)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of `pid` from /proc, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[2])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def start_run_sh(stack: Stack, tmp_path: Path, *, name: str, redis_db: int, workers: int) -> tuple[Process, Api, int]:
    """scripts/run.sh on a free port, with a Redis database of its own (its own totals), once it serves."""
    port = free_port()
    env = stack.env(
        REDIS_URL=stack.redis_url.rsplit("/", 1)[0] + f"/{redis_db}",
        BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        RQ_WORKERS=str(workers),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    process = spawn(name, ["bash", "scripts/run.sh"], env=env, log_dir=stack.log_dir)
    api = Api(f"http://127.0.0.1:{port}")

    def healthy() -> bool:
        try:
            return api.get("/healthz").status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(healthy, timeout=90, message=lambda: f"run.sh did not serve:\n{process.output()}")
    except BaseException:
        stop(process)
        raise
    return process, api, port


def assert_nothing_left(process: Process, port: int) -> None:
    """Every process of run.sh's session is gone and nothing listens on its web port."""
    deadline = time.monotonic() + 10
    while session_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {pid: _cmdline(pid) for pid in session_members(process.pid)}
    assert left == {}, f"run.sh left processes running: {left}"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "something still listens on the web port"


def test_run_sh_stops_everything_and_exits_non_zero_when_a_worker_dies(stack: Stack, tmp_path):
    process, _, port = start_run_sh(stack, tmp_path, name="run-sh-worker-dies", redis_db=9, workers=2)
    try:
        # The worker that runs the RQ scheduler: its scheduler is a forked process that would outlive it.
        def worker_with_scheduler() -> int | None:
            members = session_members(process.pid)
            workers = [pid for pid in members if "rqworker" in _cmdline(pid) and _stat(pid)[1] == process.pid]
            for pid in workers:
                if any(_stat(other) and _stat(other)[1] == pid for other in members):
                    return pid
            return None

        worker = wait_until(worker_with_scheduler, timeout=30, message=lambda: f"no scheduler:\n{process.output()}")
        os.kill(worker, signal.SIGKILL)

        assert process.popen.wait(timeout=60) != 0, process.output()
        assert "a process exited (status 137); stopping the others" in process.output()
        assert_nothing_left(process, port)
    finally:
        stop(process)
