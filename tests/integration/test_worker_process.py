"""The worker as a real process: concurrent mode runs jobs side by side and stops promptly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from sentinelflow_site.processes import free_port, redis_server_command

from .harness import Api, Workers, spawn, stop, wait_redis, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_idle_worker_stops_within_seconds_of_sigterm(workers: Workers, concurrency: str):
    worker = workers.start(WORKER_CONCURRENCY=concurrency)
    wait_until(lambda: "Listening on" in worker.output(), timeout=20, message=worker.output)
    time.sleep(1)  # every thread is waiting on the empty queues

    asked = time.monotonic()
    worker.popen.send_signal(signal.SIGTERM)
    worker.popen.wait(timeout=20)

    assert time.monotonic() - asked < 10, worker.output()


def test_concurrent_worker_runs_jobs_side_by_side_and_finishes_them_on_sigterm(api: Api, workers: Workers):
    jobs = [api.submit(type="sleep", payload={"seconds": 2}) for _ in range(4)]
    worker = workers.start(WORKER_CONCURRENCY="4")
    for job in jobs:
        api.wait_for_status(job["job_id"], "started", timeout=20)

    worker.popen.send_signal(signal.SIGTERM)  # warm shutdown: the running jobs finish first
    worker.popen.wait(timeout=30)

    finished = [api.job(job["job_id"]) for job in jobs]
    assert {job["status"] for job in finished} == {"succeeded"}, finished
    assert {job["attempts"] for job in finished} == {1}


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_idle_worker_stops_on_sigterm_while_redis_is_unreachable(workers: Workers, tmp_path, concurrency: str):
    port = free_port()
    args = redis_server_command(port, "--daemonize", "no", data_dir=tmp_path)
    redis_server = spawn(f"redis-server-{concurrency}", args, env=dict(os.environ), log_dir=tmp_path)
    try:
        wait_redis(redis_server, port)
        worker = workers.start(REDIS_URL=f"redis://127.0.0.1:{port}/0", WORKER_CONCURRENCY=concurrency)
        wait_until(lambda: "Listening on" in worker.output(), timeout=20, message=worker.output)
    finally:
        stop(redis_server)
    wait_until(lambda: "could not connect to Redis" in worker.output(), timeout=30, message=worker.output)

    worker.popen.send_signal(signal.SIGTERM)  # one signal: a warm shutdown, nothing left to finish

    try:
        worker.popen.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker still waiting for Redis after SIGTERM:\n{worker.output()}", pytrace=False)
