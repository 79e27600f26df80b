"""RQ's entry point (it takes a job id and calls services) and the call of a job's handler."""

from __future__ import annotations

import logging
from typing import Any

from rq import Retry, get_current_job

from . import redis_store, selectors, services
from .handlers import JobContext, get_job_type, run_with_context
from .models import Job, JobStatus

logger = logging.getLogger(__name__)

# What run_job returns for a run that ended because its job was cancelled (RQ keeps it as the result;
# jobs.worker logs such a run as cancelled).
CANCELLED_RUN = "cancelled"


def run_job(job_id: str) -> Any:
    """Run one attempt of a job: record the start, call its handler, record the outcome.

    Handler errors never escape to RQ: the database is the record. When the job
    is to be retried, an rq.Retry is returned so that RQ reschedules this same
    RQ job after the backoff (run by a worker started with --with-scheduler).
    A run whose job was cancelled meanwhile returns CANCELLED_RUN, logged as such.
    """
    # The lease says "this run is alive" for as long as this process lives; the sentinel runs the
    # job again once it expires. Taking and releasing it ride on the start's and the outcome's
    # metrics pipelines; `finally` releases it on any other way out (a stop, a warm shutdown).
    lease = redis_store.JobLease(job_id)
    try:
        return _run(job_id, lease)
    finally:
        lease.release()


def _run(job_id: str, lease: redis_store.JobLease) -> Any:
    current = get_current_job()
    actor = f"worker:{current.worker_name}" if current is not None and current.worker_name else "worker"
    job = services.job_start(job_id=job_id, actor=actor, lease=lease)
    if job is None:
        return None
    try:
        result = call_handler(job)
    except Exception as error:  # noqa: BLE001 - any handler failure is a failed attempt, including RQ's timeout
        delay = services.job_fail_attempt(job=job, error=error, actor=actor, lease=lease)
        if delay is None and _is_cancelled(job_id):
            # Stopped on its worker (jobs.worker.JobStopped) or failed after the cancel: not a failed attempt.
            logger.info("job %s attempt %s stopped: it was cancelled while it ran", job_id, job.attempts)
            return CANCELLED_RUN
        logger.info("job %s attempt %s failed: %r", job_id, job.attempts, error)
        if delay is None:
            return None
        # RQ counts its own retries of this RQ job; the database decides, so RQ's cap only needs to stay above.
        return Retry(max=job.attempts + 1, interval=delay)
    if services.job_succeed(job=job, result=result, actor=actor, lease=lease) is None and _is_cancelled(job_id):
        logger.info("job %s attempt %s finished after it was cancelled; its result is dropped", job_id, job.attempts)
        return CANCELLED_RUN
    return None


def call_handler(job: Job) -> Any:
    """Call the handler of the job's type with its payload and context (one run; the caller records it)."""
    job_type = get_job_type(job.type)
    if job_type is None:
        raise services.PermanentJobError(f"unknown job type {job.type!r}: no handler is registered")
    job_id = str(job.job_id)
    context = JobContext(
        job_id=job_id,
        attempt=job.attempts,
        is_cancelled=lambda: _is_cancelled(job_id),
        parents=selectors.ParentResults(job.pk),
        set_progress=services.ProgressReporter(job.pk),
    )
    return run_with_context(job_type, job.payload, context)


def _is_cancelled(job_id: str) -> bool:
    return Job.objects.filter(job_id=job_id, status=JobStatus.CANCELLED).exists()


def deliver_callback(job_id: str, attempt: int) -> str:
    """Send one attempt of a finished job's completion callback (see jobs.services.callbacks)."""
    return services.callback_deliver(job_id=job_id, attempt=attempt)
