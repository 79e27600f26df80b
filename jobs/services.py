"""Every write to a job and every state transition.

The API, the admin, the worker (jobs.tasks) and the sentinel all call these
functions, so each lifecycle rule lives here once. Transitions compare and
set: `UPDATE ... WHERE status IN (allowed)` and check the row count, so two
processes racing on one job cannot both win.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import secrets
import traceback
import zlib
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from rq.queue import Queue

from . import metrics, redis_store, sql
from .exceptions import IdempotencyKeyReused, InvalidTransition, PermanentJobError
from .models import ApiKey, ApiScope, Job, JobEvent, JobStatus, validate_api_key_name

logger = logging.getLogger(__name__)

S = JobStatus
# Which statuses each status may move to: the lifecycle of DESIGN.md.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.QUEUED, S.SCHEDULED, S.STARTED, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.QUEUED, S.STARTED, S.PENDING, S.CANCELLED}),
    S.QUEUED: frozenset({S.STARTED, S.PENDING, S.CANCELLED}),
    # `queued` from `started`: the sentinel re-runs a job whose worker died.
    S.STARTED: frozenset({S.SUCCEEDED, S.FAILED, S.RETRYING, S.QUEUED, S.CANCELLED}),
    S.RETRYING: frozenset({S.QUEUED, S.STARTED, S.PENDING, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
}
RUNNABLE_STATUSES = frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if S.STARTED in targets)
TRACEBACK_FRAMES = 5
MAX_ERROR_CHARS = 8000


def now() -> datetime:
    """The one clock of the services; tests patch it."""
    return timezone.now()


def _sources(target: str) -> list[str]:
    return [source for source, targets in ALLOWED_TRANSITIONS.items() if target in targets]


def _transition(
    job: Job,
    target: str,
    *,
    actor: str = "",
    sources: list[str] | None = None,
    expect_attempts: int | None = None,
    refresh: bool = True,
    **changes: Any,
) -> Job:
    """Move `job` to `target` if its stored status allows it, and record the event; else InvalidTransition.

    `expect_attempts` also requires the stored attempt count: the outcome of a run then only lands on
    the attempt that run started, never on a newer one (a run the sentinel gave up for dead may still finish).
    `refresh=False` (the worker's hot path) skips re-reading the row: the changes are applied to `job`
    in memory instead, which is exact when the CAS pins the row's state (status and attempts).
    """
    allowed = sources if sources is not None else _sources(target)
    stamp = now()
    if not refresh and sql.supported():
        moved = sql.move(
            lookup="id",
            value=job.pk,
            allowed=allowed,
            target=target,
            stamp=stamp,
            actor=actor,
            changes=changes,
            expect_attempts=expect_attempts,
        )
    else:
        moved = _move_with_orm(
            job, target, allowed, stamp=stamp, actor=actor, expect_attempts=expect_attempts, **changes
        )
    if not moved:
        current = Job.objects.filter(pk=job.pk).values_list("status", flat=True).first()
        raise InvalidTransition(f"Job {job.job_id} is {current}; it cannot become {target}.")
    if refresh:
        job.refresh_from_db()
    else:
        for field, value in {"status": target, "updated_at": stamp, **changes}.items():
            setattr(job, field, value)
    return job


def _move_with_orm(
    job: Job, target: str, allowed: list[str], *, stamp: datetime, actor: str, expect_attempts: int | None, **changes
) -> bool:
    """_transition's compare-and-set and timeline row in one transaction; False when the row did not match."""
    match = {} if expect_attempts is None else {"attempts": expect_attempts}
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status__in=allowed, **match).update(
            status=target, updated_at=stamp, **changes
        )
        if updated:
            JobEvent.objects.create(job_id=job.pk, at=stamp, from_status=job.status, to_status=target, actor=actor)
    return bool(updated)


def request_fingerprint(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(canonical.encode()).hexdigest()


def job_submit(
    *,
    type: str,
    payload: dict[str, Any],
    queue: str = "default",
    max_retries: int | None = None,
    timeout: int | None = None,
    run_at: datetime | None = None,
    submitted_by: str,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> tuple[Job, bool]:
    """Store a new job and enqueue it once the row is committed.

    Returns (job, created). A repeated Idempotency-Key from the same submitter
    returns the original job with created=False; reusing a key for a
    different body raises IdempotencyKeyReused.
    """
    if idempotency_key is not None:
        existing = _job_for_idempotency_key(submitted_by, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    submitted_at = now()
    item = {"type": type, "payload": payload, "queue": queue, "max_retries": max_retries, "timeout": timeout}
    job = _new_job(
        {**item, "run_at": run_at},
        submitted_at=submitted_at,
        submitted_by=submitted_by,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    try:
        _insert_jobs([job], at=submitted_at, actor=submitted_by)
    except IntegrityError:
        # Two requests raced with one Idempotency-Key; the other one stored the job.
        existing = _job_for_idempotency_key(submitted_by, idempotency_key, fingerprint)
        if existing is None:
            raise
        return existing, False
    # Enqueue only after the commit: a worker must never pick up a job whose row it cannot read.
    # (Outside a transaction the row is committed already and this runs at once.)
    transaction.on_commit(lambda: _push(job, counts=[("jobs_submitted_total", (job.type,))]))
    return job, True


def _new_job(
    item: dict[str, Any], *, submitted_at: datetime, submitted_by: str, idempotency_key: str | None, fingerprint: str
) -> Job:
    """An unsaved Job for one validated submission: `queued`, or `scheduled` when run_at is ahead."""
    run_at = item.get("run_at")
    scheduled = run_at is not None and run_at > submitted_at
    max_retries = item.get("max_retries")
    return Job(
        type=item["type"],
        payload=item["payload"],
        queue=item.get("queue") or "default",
        max_retries=settings.SENTINELFLOW_DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
        timeout=item.get("timeout") or settings.SENTINELFLOW_DEFAULT_TIMEOUT,
        run_at=run_at,
        status=S.SCHEDULED if scheduled else S.QUEUED,
        created_at=submitted_at,
        enqueued_at=None if scheduled else submitted_at,
        submitted_by=submitted_by,
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
    )


def job_submit_batch(
    *,
    items: list[dict[str, Any]],
    submitted_by: str,
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> tuple[list[Job], bool]:
    """Store many validated submissions in one transaction, then enqueue them in one Redis round trip.

    All or nothing: the items were all validated before this call, and one INSERT stores them.
    Returns (jobs in the order given, created). With an Idempotency-Key, item i is stored under
    "<key>#<i>", so a repeat returns the same jobs (created=False) and another body is refused.
    """
    keys = [f"{idempotency_key}#{index}" for index in range(len(items))] if idempotency_key else [None] * len(items)
    if idempotency_key is not None:
        existing = _jobs_for_batch_key(submitted_by, keys, fingerprint)
        if existing is not None:
            return existing, False
    submitted_at = now()
    jobs = [
        _new_job(
            item, submitted_at=submitted_at, submitted_by=submitted_by, idempotency_key=key, fingerprint=fingerprint
        )
        for item, key in zip(items, keys, strict=True)
    ]
    try:
        _insert_jobs(jobs, at=submitted_at, actor=submitted_by)
    except IntegrityError:
        existing = _jobs_for_batch_key(submitted_by, keys, fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    counts = [("jobs_submitted_total", (job.type,)) for job in jobs]
    # As for one job: the rows are committed before any worker can see the jobs.
    transaction.on_commit(lambda: _push_many(jobs, counts=counts))
    return jobs, True


def _insert_jobs(jobs: list[Job], *, at: datetime, actor: str) -> None:
    """Store new jobs (from _new_job) and their first timeline events, all or nothing; sets their pk.

    On PostgreSQL one statement does it (sql.insert_jobs); other databases use the ORM.
    """
    if sql.supported():
        sql.insert_jobs(jobs, at=at, actor=actor)
        return
    with transaction.atomic():
        if len(jobs) == 1:
            jobs[0].save()
        else:
            Job.objects.bulk_create(jobs)
        JobEvent.objects.bulk_create(JobEvent(job=job, at=at, to_status=job.status, actor=actor) for job in jobs)


def _jobs_for_batch_key(submitted_by: str, keys: list[str | None], fingerprint: str) -> list[Job] | None:
    stored = {
        job.idempotency_key: job for job in Job.objects.filter(submitted_by=submitted_by, idempotency_key__in=keys)
    }
    if not stored:
        return None
    if len(stored) != len(keys) or any(job.request_fingerprint != fingerprint for job in stored.values()):
        raise IdempotencyKeyReused()
    return [stored[key] for key in keys]


def _job_for_idempotency_key(submitted_by: str, key: str | None, fingerprint: str) -> Job | None:
    existing = Job.objects.filter(submitted_by=submitted_by, idempotency_key=key).first()
    if existing is not None and fingerprint and existing.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    return existing


def _push(job: Job, *, counts: list[tuple[str, tuple[str, ...]]] = (), replace: bool = False) -> None:
    """Put one job on its RQ queue; see _push_many."""
    _push_many([job], counts=counts, replace=replace)


def _push_many(jobs: list[Job], *, counts: list[tuple[str, tuple[str, ...]]] = (), replace: bool = False) -> None:
    """Put jobs on their RQ queues (or the scheduled registry), with their counters, in one round trip.

    With Redis down the rows go back to `pending`, and the sentinel enqueues them later: no job is lost.
    `replace` first removes an earlier RQ job of the same id (retries, restores), whose key may carry a TTL.
    """
    from .tasks import run_job

    queues: dict[str, Queue] = {}
    try:
        if replace:
            for job in jobs:
                _delete_rq_job(str(job.job_id))
        batch = metrics.MetricsBatch()
        for name, labels in counts:
            batch.inc(name, *labels)
        like_first: dict[str, _LikeFirstEnqueue] = {}
        with redis_store.connection().pipeline() as pipe:
            for job in jobs:
                queue = queues.get(job.queue) or queues.setdefault(job.queue, redis_store.queue(job.queue))
                rq_id, description = str(job.job_id), f"{job.type} {job.job_id}"
                # A restored `retrying` job waits out the rest of its backoff; a `scheduled` one whose time
                # has passed is released by the scheduler at once.
                backoff_left = job.status == S.RETRYING and job.run_at is not None and job.run_at > now()
                scheduled = job.run_at is not None and (job.status == S.SCHEDULED or backoff_left)
                if not scheduled and job.queue in like_first:
                    like_first[job.queue].enqueue(pipe, rq_id, description=description, timeout=job.timeout)
                else:
                    rq_job = queue.create_job(
                        run_job,
                        args=(rq_id,),
                        job_id=rq_id,
                        timeout=job.timeout,
                        result_ttl=settings.SENTINELFLOW_RQ_RESULT_TTL,
                        failure_ttl=settings.SENTINELFLOW_RQ_RESULT_TTL,
                        description=description,
                    )
                    if scheduled:
                        # RQ's scheduler keeps whole seconds and releases what is due within the current second:
                        # round up so that a job never starts before its run_at.
                        queue.schedule_job(rq_job, _ceil_to_second(job.run_at), pipeline=pipe)
                    else:
                        queue.enqueue_job(rq_job, pipeline=pipe)
                        if queue.is_async and len(jobs) > 1:
                            like_first[job.queue] = _LikeFirstEnqueue(queue, rq_job)
                batch.inc("jobs_enqueued_total", job.type, job.queue)
            batch.add_to(pipe)
            pipe.execute()
    except RedisError as error:
        logger.warning("%d job(s) kept as pending, Redis unavailable: %s", len(jobs), error)
        for job in jobs:
            try:
                _transition(job, S.PENDING, sources=[S.QUEUED, S.SCHEDULED], actor="redis unavailable")
            except InvalidTransition:
                pass  # a worker or a cancel got to it first
        with metrics.record() as batch:  # Redis may be back already; if not this is dropped and logged
            for name, labels in counts:
                batch.inc(name, *labels)


class _LikeFirstEnqueue:
    """Enqueues more run_job jobs on a queue as RQ enqueued the first one in the same pipeline, without
    building an RQ Job for each.

    RQ's per-job cost (a Job object, its serializer checked against a Protocol, the status written
    twice and the queue registry once per job) is half of a batch's enqueue. Jobs of one queue
    differ only in id, arguments, description and timeout: the hash RQ wrote for the first is the
    template for the others (which share its created_at and enqueued_at, being enqueued together).
    tests/test_submit_storage.py compares what this writes with what RQ writes, field by field.
    """

    def __init__(self, queue: Queue, first: RQJob) -> None:
        self.queue_key = queue.key
        # Encoded once as the client would encode them each time: packing the commands is most of the cost.
        self.encode = queue.connection.get_encoder().encode
        self.template = {self.encode(field): self.encode(value) for field, value in first.to_dict().items()}
        self.func_name = first.func_name
        self.dumps = first.serializer.dumps
        self.key_prefix = first.redis_job_namespace_prefix

    def enqueue(self, pipe, rq_id: str, *, description: str, timeout: int) -> None:
        encode = self.encode
        # What Job.data holds for func(rq_id), compressed as Job.to_dict does.
        data = zlib.compress(self.dumps((self.func_name, None, (rq_id,), {})))
        mapping = {**self.template, b"data": data, b"description": encode(description), b"timeout": encode(timeout)}
        pipe.hset(self.key_prefix + rq_id, mapping=mapping)
        pipe.rpush(self.queue_key, rq_id)


def _ceil_to_second(moment: datetime) -> datetime:
    return moment if moment.microsecond == 0 else moment.replace(microsecond=0) + timedelta(seconds=1)


def _delete_rq_job(rq_job_id: str) -> None:
    try:
        RQJob.fetch(rq_job_id, connection=redis_store.connection()).delete()
    except NoSuchJobError:
        pass


def job_enqueue(*, job: Job, actor: str = "sentinel") -> Job:
    """Enqueue a `pending` job (stored while Redis was down); used by the sentinel."""
    target = S.SCHEDULED if job.run_at and job.run_at > now() else S.QUEUED
    job = _transition(
        job, target, actor=actor, sources=[S.PENDING], enqueued_at=None if target == S.SCHEDULED else now()
    )
    logger.info("job %s enqueued by %s (it was pending)", job.job_id, actor)
    _push(job, replace=True)
    return job


def job_start(*, job_id: str, actor: str = "worker", lease: redis_store.JobLease | None = None) -> Job | None:
    """Mark a run as started (attempt + 1) and take its lease. None when the job must not run:
    cancelled, finished, started meanwhile by a duplicate delivery, or unknown."""
    started_at = now()
    if sql.supported():
        job = sql.move(
            lookup="job_id",
            value=job_id,
            allowed=list(RUNNABLE_STATUSES),
            target=S.STARTED,
            stamp=started_at,
            actor=actor,
            changes={"started_at": started_at, "finished_at": None},
            count_attempt=True,
            returning_row=True,
        )
    else:
        job = _start_with_orm(job_id, started_at, actor)
    if job is None:
        logger.info("job %s not started: it is unknown or no longer runnable", job_id)
        return None
    with metrics.record() as batch:
        if lease is not None:
            # Taken just after the row says `started`: the sentinel looks twice, LEASE_REFRESH + 1 s apart,
            # before it calls a run lost, far longer than this gap.
            lease.take(via=batch.also)
        batch.inc("jobs_started_total", job.type)
        # A scheduled or retried job waits from when it became due, not from when it was stored.
        waiting_since = max(filter(None, [job.enqueued_at, job.run_at]), default=None)
        if waiting_since:
            batch.observe("job_wait_seconds", job.type, (started_at - waiting_since).total_seconds())
    return job


def _start_with_orm(job_id: str, started_at: datetime, actor: str) -> Job | None:
    job = Job.objects.filter(job_id=job_id).first()
    if job is None:
        return None
    try:
        return _transition(
            job,
            S.STARTED,
            actor=actor,
            sources=list(RUNNABLE_STATUSES),
            expect_attempts=job.attempts,  # a duplicate delivery that started meanwhile wins; this one stops
            refresh=False,
            attempts=job.attempts + 1,
            started_at=started_at,
            finished_at=None,
        )
    except InvalidTransition:
        return None


def job_succeed(
    *, job: Job, result: Any, actor: str = "worker", lease: redis_store.JobLease | None = None
) -> Job | None:
    """Record the result of a finished run and release its lease. None when the job was cancelled
    meanwhile, or this run was given up for lost (its lease expired) and the job sent round again."""
    finished_at = now()
    try:
        moved = _transition(
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
    with metrics.record() as batch:
        if lease is not None:
            lease.release(via=batch.also)
        if moved is not None:
            batch.inc("jobs_succeeded_total", job.type)
            batch.observe("job_duration_seconds", job.type, (finished_at - job.started_at).total_seconds())
    return moved


def job_fail_attempt(
    *, job: Job, error: BaseException, actor: str = "worker", lease: redis_store.JobLease | None = None
) -> int | None:
    """Record a failed run and release its lease. Returns the backoff in seconds when the job will be
    retried, None when it failed (or was cancelled or given up for lost meanwhile).

    A PermanentJobError is never retried; otherwise a job runs at most 1 + max_retries times
    per retry budget.
    """
    finished_at = now()
    failures_in_budget = job.attempts - job.budget_start
    retry = not isinstance(error, PermanentJobError) and not attempts_spent(job)
    text = format_error(error)
    delay = retry_backoff(failures_in_budget) if retry else None
    # RQ schedules the retry in whole seconds from its own clock, a moment later than ours;
    # the whole second below is the earliest it can run, so started_at >= run_at holds.
    next_run = {"run_at": (finished_at + timedelta(seconds=delay)).replace(microsecond=0)} if retry else {}
    try:
        moved = _transition(
            job,
            S.RETRYING if retry else S.FAILED,
            actor=actor,
            sources=[S.STARTED],
            expect_attempts=job.attempts,
            refresh=False,
            error=text,
            finished_at=finished_at,
            **next_run,
        )
    except InvalidTransition:
        moved = None  # cancelled while it ran, or given up for lost and run again
    with metrics.record() as batch:
        if lease is not None:
            lease.release(via=batch.also)
        if moved is None:
            return None
        batch.observe("job_duration_seconds", job.type, (finished_at - job.started_at).total_seconds())
        if retry:
            batch.inc("jobs_retried_total", job.type, "auto")
            batch.inc("jobs_enqueued_total", job.type, job.queue)
        else:
            batch.inc("jobs_failed_total", job.type)
    return delay


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
    return max(1, round(ceiling * random.uniform(0.5, 1.0)))


def job_retry(*, job: Job, actor: str) -> Job:
    """Run a failed or cancelled job again now, with a fresh retry budget; attempts keep counting."""
    job = _transition(
        job,
        S.QUEUED,
        actor=actor,
        sources=[S.FAILED, S.CANCELLED],
        budget_start=job.attempts,
        run_at=None,
        enqueued_at=now(),
        finished_at=None,
    )
    logger.info("job %s retried by %s", job.job_id, actor)
    transaction.on_commit(lambda: _push(job, counts=[("jobs_retried_total", (job.type, "manual"))], replace=True))
    return job


def job_cancel(*, job: Job, actor: str) -> Job:
    """Cancel a job that has not finished: take it off its queue, or stop it on its worker."""
    was = job.status
    job = _transition(job, S.CANCELLED, actor=actor, finished_at=now())
    logger.info("job %s cancelled by %s (was %s)", job.job_id, actor, was)
    with metrics.record() as batch:
        batch.inc("jobs_cancelled_total", job.type)
    transaction.on_commit(lambda: _remove_from_redis(job, was_running=was == S.STARTED))
    return job


def _remove_from_redis(job: Job, *, was_running: bool) -> None:
    """Best effort: the worker also checks the row before running, so a job left in Redis never runs."""
    job_id = str(job.job_id)
    connection = redis_store.connection()
    try:
        if was_running:
            send_stop_job_command(connection, job_id)
        else:
            _delete_rq_job(job_id)
    except (NoSuchJobError, InvalidJobOperation):
        pass
    except RedisError as error:
        logger.warning("job %s cancelled in the database but not in Redis: %s", job_id, error)


def format_error(error: BaseException) -> str:
    """The exception and the last few frames of its traceback: enough to debug, small enough to store."""
    text = "".join(traceback.format_exception(error, limit=-TRACEBACK_FRAMES))
    return text if len(text) <= MAX_ERROR_CHARS else "…" + text[-MAX_ERROR_CHARS:]


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    except (TypeError, ValueError):
        return repr(value)


# --------------------------------------------------------------------------- API keys

API_KEY_PREFIX_BYTES = 6
API_KEY_SECRET_BYTES = 32
# last_used_at is a hint for operators, not an audit log: write it at most once a minute per key.
API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)


def hash_api_key_secret(secret: str) -> str:
    # The secret is 256 random bits: a fast hash is enough (no dictionary to guess from), and it keeps
    # authentication cheap on every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(*, name: str, scope: str = ApiScope.WRITE) -> tuple[ApiKey, str]:
    """Create a key; returns it and the full key text, which is not stored and cannot be shown again.

    Raises ValidationError for the reserved name `bootstrap` (the API_KEY setting's identity).
    """
    validate_api_key_name(name)
    prefix = secrets.token_hex(API_KEY_PREFIX_BYTES)
    secret = secrets.token_urlsafe(API_KEY_SECRET_BYTES)
    key = ApiKey.objects.create(name=name, prefix=prefix, secret_hash=hash_api_key_secret(secret), scope=scope)
    return key, f"sf_{prefix}_{secret}"


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key; it is refused from the next request on."""
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now())
    key.refresh_from_db()
    return key


def api_key_touch(*, key: ApiKey) -> None:
    stamp = now()
    if key.last_used_at is None or stamp - key.last_used_at > API_KEY_TOUCH_INTERVAL:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=stamp)


# --------------------------------------------------------------------------- the sentinel's repairs

RESTORABLE_STATUSES = (S.QUEUED, S.SCHEDULED, S.RETRYING)


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
        job = _transition(
            job,
            S.FAILED,
            actor=actor,
            sources=[S.STARTED],
            expect_attempts=job.attempts,
            error=f"{lost} No retries left.",
            finished_at=now(),
        )
        logger.warning("job %s failed: attempt %s lost, no retries left: %s", job.job_id, job.attempts, reason)
        with metrics.record() as batch:
            batch.inc("jobs_failed_total", job.type)
        return job
    job = _transition(
        job,
        S.QUEUED,
        actor=actor,
        sources=[S.STARTED],
        expect_attempts=job.attempts,
        error=f"{lost} Run again.",
        enqueued_at=now(),
        finished_at=None,
    )
    logger.warning("job %s queued again: attempt %s lost: %s", job.job_id, job.attempts, reason)
    # The old RQ job still names the dead worker's execution: replace it so RQ's own cleanup of that
    # execution can never touch the new run.
    transaction.on_commit(lambda: _push(job, counts=[("jobs_retried_total", (job.type, "recovered"))], replace=True))
    return job


def job_restore(*, job: Job, reason: str, actor: str = "sentinel") -> Job:
    """Put back on Redis a queued, scheduled or retrying job that Redis lost (FLUSHALL, restart, eviction).

    The status stays; the RQ job is created again (its id is the job's id) and counted in
    jobs_enqueued_total. Compare-and-set on the status and updated_at that were judged lost:
    a job that moved meanwhile (started, cancelled, restored by another sentinel) is left
    alone with InvalidTransition.
    """
    stamp = now()
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, status=job.status, updated_at=job.updated_at).update(updated_at=stamp)
        if not updated:
            raise InvalidTransition(f"Job {job.job_id} changed since it was found missing from Redis.")
        JobEvent.objects.create(
            job_id=job.pk, at=stamp, from_status=job.status, to_status=job.status, actor=f"{actor} (restored)"
        )
    job.refresh_from_db()
    logger.warning("job %s restored to Redis (%s): %s", job.job_id, job.status, reason)

    def push() -> None:
        try:
            # An id left in the queue list without its hash would be dequeued twice.
            redis_store.connection().lrem(redis_store.queue(job.queue).key, 0, str(job.job_id))
        except RedisError:
            pass  # _push meets the same outage and keeps the job as pending
        _push(job, replace=True)

    transaction.on_commit(push)
    return job
