"""scripts/run.sh, the production-style stack: gunicorn in multiprocess mode and workers; SIGTERM stops all."""

from __future__ import annotations

import signal
import socket
import time

import pytest
import requests

from sentinelflow_site.processes import free_port, session_members

from .harness import Api, Stack, spawn, stop, wait_until

pytestmark = pytest.mark.integration


def test_run_sh_serves_runs_jobs_sums_gunicorn_metrics_and_stops_on_sigterm(stack: Stack, tmp_path):
    port = free_port()
    env = stack.env(
        REDIS_URL=stack.redis_url.rsplit("/", 1)[0] + "/8",  # a Redis database of its own: its own totals
        BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        RQ_WORKERS="1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    process = spawn("run-sh", ["bash", "scripts/run.sh"], env=env, log_dir=stack.log_dir)
    api = Api(f"http://127.0.0.1:{port}")
    try:

        def healthy() -> bool:
            try:
                return api.get("/healthz").status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(healthy, timeout=90, message=lambda: f"run.sh did not serve:\n{process.output()}")
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
        deadline = time.monotonic() + 10
        while session_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session_members(process.pid) == [], "run.sh left processes running"
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        stop(process)
