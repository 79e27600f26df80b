"""jobs.worker: no-fork execution, stopping a running job, concurrency, surviving a Redis outage."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from jobs import redis_store, services
from jobs.handlers import REGISTRY, JobContext, job_type
from jobs.handlers.echo import EchoPayload
from jobs.models import Job, JobStatus
from jobs.worker import ConcurrentWorker, Worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stubborn_type():
    """A job type that sleeps in one uninterruptible-looking call and never checks for cancellation."""

    @job_type("stubborn", payload_serializer=EchoPayload)
    def stubborn(payload: dict, context: JobContext) -> dict:
        time.sleep(payload.get("seconds", 10))
        return {"slept": True}

    yield
    REGISTRY.pop("stubborn")


def cancel_once_started(job_id: str) -> threading.Thread:
    """A started thread that cancels the job as soon as a worker has started it (within 5 s)."""

    def cancel() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            row = Job.objects.get(job_id=job_id)
            if row.status == JobStatus.STARTED:
                services.job_cancel(job=row, actor="test")
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel)
    canceller.start()
    return canceller


def test_cancel_interrupts_a_running_job_that_never_checks(submit, stubborn_type):
    job = submit({"type": "stubborn", "payload": {"seconds": 10}})
    worker = Worker(redis_store.queues(), connection=redis_store.connection())

    canceller = cancel_once_started(job["job_id"])
    started = time.monotonic()
    worker.work(burst=True, logging_level="WARNING")
    canceller.join()

    assert time.monotonic() - started < 5  # not the handler's 10 s
    row = Job.objects.get(job_id=job["job_id"])
    assert (row.status, row.result, row.attempts) == (JobStatus.CANCELLED, None, 1)


def test_a_job_cancelled_while_it_runs_is_logged_as_cancelled_not_failed_nor_completed(submit, stubborn_type, caplog):
    caplog.set_level(logging.INFO)
    job = submit({"type": "stubborn", "payload": {"seconds": 10}})

    canceller = cancel_once_started(job["job_id"])
    Worker(redis_store.queues(), connection=redis_store.connection()).work(burst=True, logging_level="INFO")
    canceller.join()

    job_lines = [record.getMessage() for record in caplog.records if job["job_id"] in record.getMessage()]
    assert any("stopped: it was cancelled while it ran" in line for line in job_lines), job_lines
    assert not any("failed" in line or "Successfully completed" in line for line in job_lines), job_lines
    assert Job.objects.get(job_id=job["job_id"]).status == JobStatus.CANCELLED


def test_a_run_that_finishes_after_its_cancel_drops_its_result_and_says_so(submit, run_worker, caplog):
    @job_type("cancels-itself", payload_serializer=EchoPayload)
    def cancels_itself(payload: dict, context: JobContext) -> dict:
        # A cancel whose stop request never reached the worker: the handler runs to its end.
        Job.objects.filter(job_id=context.job_id).update(status=JobStatus.CANCELLED)
        return {"done": True}

    caplog.set_level(logging.INFO)
    try:
        job = submit({"type": "cancels-itself", "payload": {}})
        Worker(redis_store.queues(), connection=redis_store.connection()).work(burst=True, logging_level="INFO")
    finally:
        REGISTRY.pop("cancels-itself")

    job_lines = [record.getMessage() for record in caplog.records if job["job_id"] in record.getMessage()]
    assert any("finished after it was cancelled; its result is dropped" in line for line in job_lines), job_lines
    assert not any("Successfully completed" in line for line in job_lines), job_lines
    row = Job.objects.get(job_id=job["job_id"])
    assert (row.status, row.result) == (JobStatus.CANCELLED, None)


def test_a_failing_job_logs_its_failed_attempt_and_the_workers_line(submit, caplog):
    caplog.set_level(logging.INFO)
    job = submit({"type": "fail", "max_retries": 0})

    Worker(redis_store.queues(), connection=redis_store.connection()).work(burst=True, logging_level="INFO")

    job_lines = [record.getMessage() for record in caplog.records if job["job_id"] in record.getMessage()]
    assert any("attempt 1 failed" in line and "DrillFailure" in line for line in job_lines), job_lines
    assert any(f"default: job {job['job_id']} failed in" in line for line in job_lines), job_lines


def test_concurrent_worker_runs_io_bound_jobs_side_by_side(submit, settings):
    settings.SENTINELFLOW_WORKER_CONCURRENCY = 8
    jobs = [submit({"type": "sleep", "payload": {"seconds": 2}}) for _ in range(8)]

    ConcurrentWorker(redis_store.queues(), connection=redis_store.connection()).work(
        burst=True, logging_level="WARNING"
    )

    rows = list(Job.objects.filter(job_id__in=[job["job_id"] for job in jobs]))
    assert {row.status for row in rows} == {JobStatus.SUCCEEDED}
    # In flight together: every run had started before any of them finished.
    assert max(row.started_at for row in rows) < min(row.finished_at for row in rows)


def test_worker_keeps_the_job_timeout_without_forking(submit, run_worker):
    job = submit({"type": "sleep", "payload": {"seconds": 3}, "timeout": 1, "max_retries": 0})

    run_worker()

    row = Job.objects.get(job_id=job["job_id"])
    assert row.status == JobStatus.FAILED
    assert "JobTimeoutException" in row.error


def test_worker_waits_out_a_redis_outage_instead_of_exiting(monkeypatch):
    worker = Worker(redis_store.queues(), connection=redis_store.connection())
    outage = {"pings_left_down": 2}
    runs = []

    def ping():
        if outage["pings_left_down"] > 0:
            outage["pings_left_down"] -= 1
            import redis

            raise redis.ConnectionError("down")

    monkeypatch.setattr(worker, "_ping", ping)
    monkeypatch.setattr("jobs.worker.workers.REDIS_RETRY_SECONDS", 0.01)

    def fake_batch_loop(self, *args, **kwargs):
        runs.append(outage["pings_left_down"])
        self._stop_requested = True
        return True

    monkeypatch.setattr(Worker, "_work_batches", fake_batch_loop)
    assert worker.work(burst=False) is True
    assert runs == [0]  # the work loop ran once, only after Redis answered again
