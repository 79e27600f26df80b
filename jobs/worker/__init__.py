"""The worker: the RQ worker classes (jobs.worker.workers) and how they take jobs in batches (jobs.worker.batches)."""

from .workers import (
    REDIS_RETRY_SECONDS,
    STOP_JOB_SIGNAL,
    ConcurrentWorker,
    FailoverProofScheduler,
    JobStopped,
    Worker,
    redis_url_for_logs,
    wait_for_redis_at_start,
)

__all__ = [
    "REDIS_RETRY_SECONDS",
    "STOP_JOB_SIGNAL",
    "ConcurrentWorker",
    "FailoverProofScheduler",
    "JobStopped",
    "Worker",
    "redis_url_for_logs",
    "wait_for_redis_at_start",
]
