"""A job's runs and their outcomes: start, succeed, fail an attempt, retry, cancel, and the backoff.

The three ways a job runs again:

1. Automatic retry, after a failed attempt. The worker (jobs.tasks.run_job) calls job_fail_attempt,
   which moves the job `started` -> `retrying` with run_at = now + retry_backoff(n) while its budget
   (1 + max_retries runs since budget_start, see attempts_spent) lasts, and returns the delay;
   run_job hands RQ an rq.Retry of that interval, and RQ's scheduler puts the same RQ job back on
   its queue when it is due. A PermanentJobError, or a spent budget, fails the job instead.
2. Manual retry, of a `failed` or `cancelled` job: job_retry (the API's /jobs/{id}/retry and the
   admin) moves it to `queued` at once with a fresh budget (budget_start = attempts) and pushes a
   new RQ job after the commit.
3. Sentinel recovery, of a `started` job whose run was lost (its worker died, its lease expired):
   jobs.services.repairs.job_recover counts the lost run as a failed attempt under the same budget
   rule and queues the job again at once (no backoff: the handler did not fail), or fails it.
"""

from __future__ import annotations

import json
import logging
import random
import traceback
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from .. import metrics, redis_store, store
from ..exceptions import InvalidTransition, PermanentJobError
from ..models import Job
from . import dependencies, transitions
from .callbacks import callback_reset, callbacks_after_finish
from .enqueue import push, remove_from_redis
from .fingerprints import error_fingerprint
from .transitions import RUNNABLE_STATUSES, S, transition

logger = logging.getLogger(__name__)

TRACEBACK_FRAMES = 5
MAX_ERROR_CHARS = 8000


def job_start(*, job_id: str, actor: str = "worker", lease: redis_store.JobLease | None = None) -> Job | None:
    """Mark a run as started (attempt + 1) and take its lease. None when the job must not run:
    cancelled, finished, started meanwhile by a duplicate delivery, or unknown."""
    started_at = transitions.now()
    job = store.backend().start(
        job_id=job_id,
        allowed=list(RUNNABLE_STATUSES),
        stamp=started_at,
        actor=actor,
        changes={"started_at": started_at, "finished_at": None},
    )
    if job is None:
        logger.info("job %s not started: it is unknown or no longer runnable", job_id)
        return None
    with metrics.record() as batch:
        if lease is not None:
            # Taken just after the row says `started`: the sentinel looks twice, LEASE_REFRESH + 1 s apart,
            # before it calls a run lost, far longer than this gap.
            lease.take(via=batch.also)
        count_start(batch, job, started_at)
    return job


def count_start(batch: metrics.MetricsBatch, job: Job, started_at: datetime) -> None:
    """Count a run's start and how long its job waited for it."""
    batch.inc("jobs_started_total", job.type)
    # A scheduled or retried job waits from when it became due, not from when it was stored.
    waiting_since = max(filter(None, [job.enqueued_at, job.run_at]), default=None)
    if waiting_since:
        batch.observe("job_wait_seconds", job.type, (started_at - waiting_since).total_seconds())


def job_succeed(
    *, job: Job, result: Any, actor: str = "worker", lease: redis_store.JobLease | None = None
) -> Job | None:
    """Record the result of a finished run and release its lease. None when the job was cancelled
    meanwhile, or this run was given up for lost (its lease expired) and the job sent round again."""
    finished_at = transitions.now()
    try:
        moved = transition(
            job,
            S.SUCCEEDED,
            actor=actor,
            sources=[S.STARTED],
            expect_attempts=job.attempts,
            refresh=False,
            result=_jsonable(result),
            finished_at=finished_at,
        )
    except InvalidTransition:
        moved = None
    if moved is not None:
        callbacks_after_finish([moved])
    with metrics.record() as batch:
        if lease is not None:
            lease.release(via=batch.also)
        if moved is not None:
            batch.inc("jobs_succeeded_total", job.type)
            batch.observe("job_duration_seconds", job.type, run_seconds(job, finished_at))
    if moved is not None:
        dependencies.release_after_outcome([job])
    return moved


def job_fail_attempt(
    *, job: Job, error: BaseException, actor: str = "worker", lease: redis_store.JobLease | None = None
) -> int | None:
    """Record a failed run and release its lease. Returns the backoff in seconds when the job will be
    retried, None when it failed (or was cancelled or given up for lost meanwhile).

    A PermanentJobError is never retried; otherwise a job runs at most 1 + max_retries times
    per retry budget.
    """
    finished_at = transitions.now()
    failures_in_budget = job.attempts - job.budget_start
    retry = not isinstance(error, PermanentJobError) and not attempts_spent(job)
    text = format_error(error)
    delay = retry_backoff(failures_in_budget) if retry else None
    # RQ schedules the retry in whole seconds from its own clock, a moment later than ours;
    # the whole second below is the earliest it can run, so started_at >= run_at holds.
    next_run = {"run_at": (finished_at + timedelta(seconds=delay)).replace(microsecond=0)} if delay is not None else {}
    try:
        moved = transition(
            job,
            S.RETRYING if retry else S.FAILED,
            actor=actor,
            sources=[S.STARTED],
            expect_attempts=job.attempts,
            refresh=False,
            error=text,
            error_fingerprint=error_fingerprint(error),
            finished_at=finished_at,
            **next_run,
        )
    except InvalidTransition:
        moved = None  # cancelled while it ran, or given up for lost and run again
    if moved is not None and not retry:
        callbacks_after_finish([moved])
    with metrics.record() as batch:
        if lease is not None:
            lease.release(via=batch.also)
        if moved is None:
            return None
        batch.observe("job_duration_seconds", job.type, run_seconds(job, finished_at))
        if retry:
            batch.inc("jobs_retried_total", job.type, "auto")
            batch.inc("jobs_enqueued_total", job.type, job.queue)
        else:
            batch.inc("jobs_failed_total", job.type)
    if not retry:
        dependencies.release_after_outcome([job])
    return delay


def run_seconds(job: Job, finished_at: datetime) -> float:
    """How long the attempt that finished at `finished_at` ran (a job that finishes was started)."""
    return (finished_at - (job.started_at or finished_at)).total_seconds()


def attempts_spent(job: Job) -> bool:
    """Whether the job has used its retry budget: 1 + max_retries runs since the budget began."""
    return job.attempts - job.budget_start > job.max_retries


def retry_backoff(failure_number: int) -> int:
    """Seconds before automatic retry number `failure_number` (1-based): exponential, capped, with jitter.

    base * 2**(n-1), capped at RETRY_BACKOFF_MAX, then scaled by a random factor in [0.5, 1]
    so that jobs that failed together do not come back together. Whole seconds (RQ schedules in seconds).
    """
    base = settings.SENTINELFLOW_RETRY_BACKOFF_BASE
    if base <= 0:
        return 0
    ceiling = min(settings.SENTINELFLOW_RETRY_BACKOFF_MAX, base * 2 ** (failure_number - 1))
    return max(1, round(float(ceiling) * random.uniform(0.5, 1.0)))


def job_retry(*, job: Job, actor: str) -> Job:
    """Run a failed or cancelled job again now, with a fresh retry budget; attempts keep counting.

    A dependent goes back to `waiting` while a parent has not finished (retry the parent first), and
    is refused while a parent it needs has failed or is cancelled."""
    waits = dependencies.retry_must_wait(job)
    if waits:
        job = transition(
            job,
            S.WAITING,
            actor=actor,
            sources=[S.FAILED, S.CANCELLED],
            budget_start=job.attempts,
            run_at=None,
            error="",
            finished_at=None,
        )
        logger.info("job %s retried by %s: it waits for its parents", job.job_id, actor)
        with metrics.record() as batch:
            batch.inc("jobs_retried_total", job.type, "manual")
        # A parent may have finished between the check and the move: the release decides.
        dependencies.release_after_outcome(dependencies.parents_of(job))
        job.refresh_from_db()
        return job
    job = transition(
        job,
        S.QUEUED,
        actor=actor,
        sources=[S.FAILED, S.CANCELLED],
        budget_start=job.attempts,
        run_at=None,
        enqueued_at=transitions.now(),
        finished_at=None,
        **callback_reset(job),
        # A finished job's unique window is over: run again, it must not collide with (nor block) a newer holder.
        unique_claim=None,
    )
    logger.info("job %s retried by %s", job.job_id, actor)
    transaction.on_commit(lambda: push(job, counts=[("jobs_retried_total", (job.type, "manual"))], replace=True))
    return job


def job_cancel(*, job: Job, actor: str) -> Job:
    """Cancel a job that has not finished: take it off its queue, or stop it on its worker."""
    was = job.status
    job = transition(job, S.CANCELLED, actor=actor, finished_at=transitions.now())
    callbacks_after_finish([job])
    logger.info("job %s cancelled by %s (was %s)", job.job_id, actor, was)
    with metrics.record() as batch:
        batch.inc("jobs_cancelled_total", job.type)
    transaction.on_commit(lambda: remove_from_redis(job, was_running=was == S.STARTED))
    dependencies.release_after_outcome([job])
    return job


def format_error(error: BaseException) -> str:
    """The exception and the last few frames of its traceback: enough to debug, small enough to store."""
    text = "".join(traceback.format_exception(error, limit=-TRACEBACK_FRAMES))
    return text if len(text) <= MAX_ERROR_CHARS else "…" + text[-MAX_ERROR_CHARS:]


def _jsonable(value: Any) -> Any:
    """The result as stored: JSON (or its repr), and never more than MAX_RESULT_BYTES (see bounded_result)."""
    try:
        text = json.dumps(value, cls=DjangoJSONEncoder)
    except (TypeError, ValueError):
        text = json.dumps(repr(value))
    return bounded_result(text)


def bounded_result(text: str) -> Any:
    """A result's JSON text as stored: itself, or a marker when it is larger than MAX_RESULT_BYTES.

    The marker keeps the size and the start of the text, so a reader sees what was dropped and why;
    a large result fills neither the row, nor every list page, nor the callback that carries it.
    """
    size = len(text.encode())
    limit = settings.SENTINELFLOW_MAX_RESULT_BYTES
    if size <= limit:
        return json.loads(text)
    return {"truncated": True, "size_bytes": size, "limit_bytes": limit, "preview": text[: min(limit, 1000) // 4]}
