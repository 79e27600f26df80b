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

from .. import store
from ..exceptions import CallbackNotSignable, IdempotencyKeyReused
from ..models import CallbackStatus, Job
from . import transitions
from .callbacks import signing_key_for
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
    callback_url: str = "",
) -> tuple[Job, bool]:
    """Store a new job and enqueue it once the row is committed.

    Returns (job, created). A repeated Idempotency-Key from the same submitter
    returns the original job with created=False; reusing a key for a
    different body raises IdempotencyKeyReused. A `callback_url` needs a submitter that can sign its
    callbacks (a stored API key with a signing secret), else CallbackNotSignable.
    """
    if idempotency_key is not None:
        existing = _job_for_idempotency_key(submitted_by, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    check_signer([{"callback_url": callback_url}], submitted_by)
    submitted_at = transitions.now()
    item = {"type": type, "payload": payload, "queue": queue, "max_retries": max_retries, "timeout": timeout}
    item |= {"callback_url": callback_url}
    job = new_job(
        {**item, "run_at": run_at},
        submitted_at=submitted_at,
        submitted_by=submitted_by,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    try:
        insert_jobs([job], at=submitted_at, actor=submitted_by)
    except IntegrityError:
        # Two requests raced with one Idempotency-Key; the other one stored the job.
        existing = _job_for_idempotency_key(submitted_by, idempotency_key, fingerprint)
        if existing is None:
            raise
        return existing, False
    # Enqueue only after the commit: a worker must never pick up a job whose row it cannot read.
    # (Outside a transaction the row is committed already and this runs at once.)
    transaction.on_commit(lambda: push(job, counts=[("jobs_submitted_total", (job.type,))]))
    return job, True


def new_job(
    item: dict[str, Any], *, submitted_at: datetime, submitted_by: str, idempotency_key: str | None, fingerprint: str
) -> Job:
    """An unsaved Job for one validated submission: `queued`, or `scheduled` when run_at is ahead."""
    run_at = item.get("run_at")
    scheduled = run_at is not None and run_at > submitted_at
    max_retries = item.get("max_retries")
    callback_url = item.get("callback_url") or ""
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
        callback_url=callback_url,
        callback_status=CallbackStatus.PENDING if callback_url else CallbackStatus.NONE,
    )


def check_signer(items: list[dict[str, Any]], submitted_by: str) -> None:
    """CallbackNotSignable when an item asks for a callback and the submitter has no key to sign it with."""
    if any(item.get("callback_url") for item in items) and signing_key_for(submitted_by) is None:
        raise CallbackNotSignable()


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
    check_signer(items, submitted_by)
    submitted_at = transitions.now()
    jobs = [
        new_job(
            item, submitted_at=submitted_at, submitted_by=submitted_by, idempotency_key=key, fingerprint=fingerprint
        )
        for item, key in zip(items, keys, strict=True)
    ]
    try:
        insert_jobs(jobs, at=submitted_at, actor=submitted_by)
    except IntegrityError:
        existing = _jobs_for_batch_key(submitted_by, keys, fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    counts = [("jobs_submitted_total", (job.type,)) for job in jobs]
    # As for one job: the rows are committed before any worker can see the jobs.
    transaction.on_commit(lambda: push_many(jobs, counts=counts))
    return jobs, True


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
