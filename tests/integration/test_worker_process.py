"""The worker as a real process: concurrent mode runs jobs side by side and stops promptly on SIGTERM."""

from __future__ import annotations

import signal
import time

import pytest

from .harness import Api, Workers, wait_until

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
