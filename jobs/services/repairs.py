"""The sentinel's repairs (jobs.sentinel finds the jobs; these change them).

- job_enqueue: a `pending` job, stored while Redis was down, goes onto its queue.
- job_recover: a `started` job whose run was lost is queued again as a new attempt, or failed.
- job_restore: a `queued`, `scheduled` or `retrying` job that Redis lost is put back on Redis.

Each is a compare-and-set on the state that was judged broken, so a job that moved meanwhile, or a
second sentinel, gets InvalidTransition and is left alone.
"""

from __future__ import annotations

import logging

from django.db import transaction
from redis.exceptions import RedisError

from .. import metrics, redis_store, store
from ..exceptions import InvalidTransition
from ..models import Job
from . import dependencies, transitions
from .callbacks import callbacks_after_finish
from .enqueue import push
from .fingerprints import fingerprint
from .lifecycle import attempts_spent
from .transitions import S, transition

logger = logging.getLogger(__name__)

RESTORABLE_STATUSES = (S.QUEUED, S.SCHEDULED, S.RETRYING)


def job_enqueue(*, job: Job, actor: str = "sentinel") -> Job:
    """Enqueue a `pending` job (stored while Redis was down); used by the sentinel."""
    now = transitions.now()
    target = S.SCHEDULED if job.run_at and job.run_at > now else S.QUEUED
    job = transition(job, target, actor=actor, sources=[S.PENDING], enqueued_at=None if target == S.SCHEDULED else now)
    logger.info("job %s enqueued by %s (it was pending)", job.job_id, actor)
    push(job, replace=True)
    return job


def job_recover(*, job: Job, reason: str, actor: str = "sentinel") -> Job:
    """Deal with a started job whose run was lost (its worker died): run it again, or fail it.

    The lost run counts as a failed attempt under the budget rule of job_fail_attempt: with
    retries left the job goes back to `queued` at once (no backoff: the handler did not fail)
    and counts in jobs_retried_total{reason="recovered"} and jobs_enqueued_total; with its
    attempts spent it fails. Compare-and-set on the status and the attempt count that were
    judged lost, so a run that finished meanwhile, or a second sentinel, gets InvalidTransition.
    """
    lost = f"Attempt {job.attempts} was lost: {reason}."
    if attempts_spent(job):
        job = transition(
            job,
            S.FAILED,
            actor=actor,
            sources=[S.STARTED],
            expect_attempts=job.attempts,
            error=f"{lost} No retries left.",
            error_fingerprint=fingerprint("LostRun", reason),
            finished_at=transitions.now(),
        )
        logger.warning("job %s failed: attempt %s lost, no retries left: %s", job.job_id, job.attempts, reason)
        callbacks_after_finish([job])
        with metrics.record() as batch:
            batch.inc("jobs_failed_total", job.type)
        dependencies.release_after_outcome([job])
        return job
    job = transition(
        job,
        S.QUEUED,
        actor=actor,
        sources=[S.STARTED],
        expect_attempts=job.attempts,
        error=f"{lost} Run again.",
        enqueued_at=transitions.now(),
        finished_at=None,
    )
    logger.warning("job %s queued again: attempt %s lost: %s", job.job_id, job.attempts, reason)
    # The old RQ job still names the dead worker's execution: replace it so RQ's own cleanup of that
    # execution can never touch the new run.
    transaction.on_commit(lambda: push(job, counts=[("jobs_retried_total", (job.type, "recovered"))], replace=True))
    return job


def job_restore(*, job: Job, reason: str, actor: str = "sentinel") -> Job:
    """Put back on Redis a queued, scheduled or retrying job that Redis lost (FLUSHALL, restart, eviction).

    The status stays; the RQ job is created again (its id is the job's id) and counted in
    jobs_enqueued_total. Compare-and-set on the status and updated_at that were judged lost:
    a job that moved meanwhile (started, cancelled, restored by another sentinel) is left
    alone with InvalidTransition.
    """
    restored = store.backend().move(
        job=job,
        target=job.status,
        allowed=[job.status],
        stamp=transitions.now(),
        actor=f"{actor} (restored)",
        changes={},
        expect_updated_at=job.updated_at,
    )
    if not restored:
        raise InvalidTransition(f"Job {job.job_id} changed since it was found missing from Redis.")
    job.refresh_from_db()
    logger.warning("job %s restored to Redis (%s): %s", job.job_id, job.status, reason)

    def push_again() -> None:
        try:
            # An id left in the queue list without its hash would be dequeued twice.
            redis_store.connection().lrem(redis_store.queue(job.queue).key, 0, str(job.job_id))
        except RedisError:
            pass  # push meets the same outage and keeps the job as pending
        push(job, replace=True)

    transaction.on_commit(push_again)
    return job
