"""New jobs: one submission or a batch, stored with their first timeline rows, then enqueued.

An Idempotency-Key makes a submission safe to repeat: the same key and body return the jobs
stored the first time; the same key with another body is refused (IdempotencyKeyReused).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction

from .. import metrics, store
from ..exceptions import IdempotencyKeyReused, UnknownParents
from ..models import Job, JobDependency
from . import transitions
from .dependencies import ParentState, first_status, parent_name
from .enqueue import push, push_many
from .transitions import S


def request_fingerprint(body: Any) -> str:
    """A digest of a request body, to tell a repeat of a keyed submission from another body."""
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
    depends_on: list[str] | None = None,
    allow_failure: bool = False,
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
    submitted_at = transitions.now()
    item: dict[str, Any] = {
        "type": type,
        "payload": payload,
        "queue": queue,
        "max_retries": max_retries,
        "timeout": timeout,
    }
    item |= {"depends_on": depends_on or [], "allow_failure": allow_failure}
    job = new_job(
        {**item, "run_at": run_at},
        submitted_at=submitted_at,
        submitted_by=submitted_by,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    try:
        if depends_on:
            insert_dependents([job], [depends_on], at=submitted_at, actor=submitted_by)
        else:
            insert_jobs([job], at=submitted_at, actor=submitted_by)
    except IntegrityError:
        # Two requests raced with one Idempotency-Key; the other one stored the job.
        existing = _job_for_idempotency_key(submitted_by, idempotency_key, fingerprint)
        if existing is None:
            raise
        return existing, False
    # Enqueue only after the commit: a worker must never pick up a job whose row it cannot read.
    # (Outside a transaction the row is committed already and this runs at once.)
    if job.status in (S.QUEUED, S.SCHEDULED):
        transaction.on_commit(lambda: push(job, counts=[("jobs_submitted_total", (job.type,))]))
    else:
        count_submitted([job])
    return job, True


def count_submitted(jobs: list[Job]) -> None:
    """Count jobs stored but not pushed (waiting for parents, or cancelled with one)."""
    with metrics.record() as batch:
        for job in jobs:
            batch.inc("jobs_submitted_total", job.type)


def new_job(
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
        allow_failure=bool(item.get("allow_failure")),
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
    keys: list[str | None] = (
        [f"{idempotency_key}#{index}" for index in range(len(items))] if idempotency_key else [None] * len(items)
    )
    if idempotency_key is not None:
        existing = _jobs_for_batch_key(submitted_by, keys, fingerprint)
        if existing is not None:
            return existing, False
    submitted_at = transitions.now()
    jobs = [
        new_job(
            item, submitted_at=submitted_at, submitted_by=submitted_by, idempotency_key=key, fingerprint=fingerprint
        )
        for item, key in zip(items, keys, strict=True)
    ]
    try:
        if any(item.get("depends_on") for item in items):
            insert_dependents(
                jobs, [item.get("depends_on") or [] for item in items], at=submitted_at, actor=submitted_by
            )
        else:
            insert_jobs(jobs, at=submitted_at, actor=submitted_by)
    except IntegrityError:
        existing = _jobs_for_batch_key(submitted_by, keys, fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    ready = [job for job in jobs if job.status in (S.QUEUED, S.SCHEDULED)]
    counts = [("jobs_submitted_total", (job.type,)) for job in ready]
    # As for one job: the rows are committed before any worker can see the jobs.
    if ready:
        transaction.on_commit(lambda: push_many(ready, counts=counts))
    count_submitted([job for job in jobs if job.status not in (S.QUEUED, S.SCHEDULED)])
    return jobs, True


def insert_dependents(jobs: list[Job], parents: list[list[str]], *, at: datetime, actor: str) -> None:
    """Store new jobs, some depending on existing jobs (`parents[i]`: job ids of jobs[i]'s parents), with
    their edges, in one transaction; each dependent starts `waiting`, or `cancelled` (a parent failed),
    or as it was made (every parent finished). The parents' rows are locked first, so a parent finishing
    meanwhile either is seen finished here or sees its new dependents when it releases them."""
    wanted = {str(job_id) for job_ids in parents for job_id in job_ids}
    with transaction.atomic():
        found = {
            str(parent.job_id): parent
            for parent in Job.objects.select_for_update().filter(job_id__in=wanted).order_by("id")
        }
        unknown = sorted(wanted - set(found))
        if unknown:
            raise UnknownParents(f"depends_on names unknown jobs: {', '.join(unknown)}.")
        for job, job_ids in zip(jobs, parents, strict=True):
            if not job_ids:
                continue
            states = [
                ParentState(parent_name(found[str(i)].job_id, found[str(i)].node), found[str(i)].status)
                for i in job_ids
            ]
            status, error = first_status(states, allow_failure=job.allow_failure)
            if status is not None:
                job.status, job.error, job.enqueued_at = status, error, None
                job.finished_at = at if status == S.CANCELLED else None
        insert_jobs(jobs, at=at, actor=actor)
        JobDependency.objects.bulk_create(
            JobDependency(child_id=job.pk, parent_id=found[str(job_id)].pk)
            for job, job_ids in zip(jobs, parents, strict=True)
            for job_id in dict.fromkeys(str(i) for i in job_ids)
        )


def insert_jobs(jobs: list[Job], *, at: datetime, actor: str) -> None:
    """Store new jobs (from new_job) and their first timeline events, all or nothing; sets their pk."""
    store.backend().insert(jobs, at=at, actor=actor)


def _jobs_for_batch_key(submitted_by: str, keys: Sequence[str | None], fingerprint: str) -> list[Job] | None:
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
