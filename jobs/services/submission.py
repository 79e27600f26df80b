"""New jobs: one submission or a batch, stored with their first timeline rows, then enqueued.

An Idempotency-Key makes a submission safe to repeat: the same key and body return the jobs
stored the first time; the same key with another body is refused (IdempotencyKeyReused).

A unique key (`unique_key`, or the job type's `unique_by` payload fields) makes a submission answer with
the unfinished job of the same type and key submitted within its window (`unique_for` seconds), whoever
submitted it. The database decides: `unique_claim` carries the key while the job may block others, and a
unique index over the unfinished jobs lets one of many racing inserts win (see Job.Meta).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction

from .. import metrics, store
from ..exceptions import CallbackNotSignable, IdempotencyKeyReused, UniqueKeyContended, UnknownParents
from ..handlers import get_job_type
from ..models import TERMINAL_STATUSES, CallbackStatus, Job, JobDependency
from . import transitions
from .callbacks import signing_key_for
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
    callback_url: str = "",
    unique_key: str | None = None,
    unique_for: int | None = None,
    tags: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    depends_on: list[str] | None = None,
    allow_failure: bool = False,
) -> tuple[Job, bool]:
    """Store a new job and enqueue it once the row is committed.

    Returns (job, created). A repeated Idempotency-Key from the same submitter
    returns the original job with created=False; reusing a key for a
    different body raises IdempotencyKeyReused. A unique key held by an
    unfinished job of the type (see the module) returns that job, created=False. A `callback_url` needs a
    submitter that can sign its callbacks (a stored API key with a signing secret), else CallbackNotSignable.
    """
    if idempotency_key is not None:
        existing = _job_for_idempotency_key(submitted_by, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    check_signer([{"callback_url": callback_url}], submitted_by)
    item: dict[str, Any] = {
        "type": type,
        "payload": payload,
        "queue": queue,
        "max_retries": max_retries,
        "timeout": timeout,
    }
    item |= {"run_at": run_at, "unique_key": unique_key, "unique_for": unique_for, "tags": tags, "metadata": metadata}
    item |= {"callback_url": callback_url, "depends_on": depends_on or [], "allow_failure": allow_failure}
    item = with_unique_defaults(item)
    for _ in range(UNIQUE_RACE_ATTEMPTS):
        submitted_at = transitions.now()
        if item["unique_key"] is not None:
            holder = unique_holder(item["type"], item["unique_key"], at=submitted_at)
            if holder is not None:
                return holder, False
        job = new_job(
            item,
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
            break
        except IntegrityError:
            # Two requests raced with one Idempotency-Key, or with one unique key: the other one stored the job.
            existing = _job_for_idempotency_key(submitted_by, idempotency_key, fingerprint) if idempotency_key else None
            if existing is not None:
                return existing, False
            if item["unique_key"] is None:
                raise
            # The winner may have finished already: look again, and insert again if its claim is gone.
    else:
        raise UniqueKeyContended()
    # Enqueue only after the commit: a worker must never pick up a job whose row it cannot read.
    # (Outside a transaction the row is committed already and this runs at once.)
    if job.status in (S.QUEUED, S.SCHEDULED):
        transaction.on_commit(lambda: push(job, counts=[("jobs_submitted_total", (job.type,))]))
    else:
        count_submitted([job])
    return job, True


# Inserts tried by one unique submit: each failed one means another submit won the key; one whose job is
# gone by the time this one looks (it finished at once) is the only reason to try again.
UNIQUE_RACE_ATTEMPTS = 5


def with_unique_defaults(item: dict[str, Any]) -> dict[str, Any]:
    """The submission with its unique key and window: as given, else the job type's (`unique_by`, `unique_for`).

    A key made from payload fields is `field=<JSON value>` joined by "&" (a digest when longer than the column).
    """
    job_type = get_job_type(item["type"])
    key, window = item.get("unique_key"), item.get("unique_for")
    if job_type is not None and job_type.unique_by:
        if key is None:
            payload = item.get("payload") or {}
            key = "&".join(
                f"{name}={json.dumps(payload.get(name), sort_keys=True, cls=DjangoJSONEncoder)}"
                for name in job_type.unique_by
            )
            if len(key) > UNIQUE_KEY_MAX_LENGTH:
                key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        if window is None:
            window = job_type.unique_for
    return {**item, "unique_key": key, "unique_for": window if key is not None else None}


UNIQUE_KEY_MAX_LENGTH = 255


def unique_holder(type: str, key: str, *, at: datetime) -> Job | None:
    """The unfinished job of `type` that holds `key` at `at`, or None.

    A holder whose window has passed gives its claim up here (compare-and-set on the claim, so racing
    submits release it once and then race on the insert); its `unique_key` stays for the record.
    """
    holder = Job.objects.filter(type=type, unique_claim=key).exclude(status__in=TERMINAL_STATUSES).first()
    if holder is None:
        return None
    if holder.unique_until is not None and holder.unique_until <= at:
        Job.objects.filter(pk=holder.pk, unique_claim=key).update(unique_claim=None)
        return None
    return holder


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
    callback_url = item.get("callback_url") or ""
    unique_key, unique_for = item.get("unique_key"), item.get("unique_for")
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
        unique_key=unique_key,
        unique_claim=unique_key,
        unique_until=submitted_at + timedelta(seconds=unique_for) if unique_key and unique_for else None,
        tags=item.get("tags") or [],
        metadata=item.get("metadata") or {},
        allow_failure=bool(item.get("allow_failure")),
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
    An item whose unique key an unfinished job holds (or an earlier item of the batch) is answered
    with that job and stores nothing; created is True when the batch stored any job.
    """
    keys: list[str | None] = (
        [f"{idempotency_key}#{index}" for index in range(len(items))] if idempotency_key else [None] * len(items)
    )
    items = [with_unique_defaults(item) for item in items]
    any_unique = any(item["unique_key"] is not None for item in items)
    check_signer(items, submitted_by)
    for _ in range(UNIQUE_RACE_ATTEMPTS):
        answers: list[Job | None] = [None] * len(items)
        if idempotency_key is not None:
            stored = _jobs_for_batch_key(submitted_by, keys, fingerprint, any_unique)
            if stored is not None and all(job is not None for job in stored):
                return [job for job in stored if job is not None], False
            answers = stored or answers
        submitted_at = transitions.now()
        new: list[Job] = []
        new_parents: list[list[str]] = []
        claimed: dict[tuple[str, str], Job] = {}
        for index, (item, key) in enumerate(zip(items, keys, strict=True)):
            if answers[index] is not None:
                continue
            unique = (item["type"], item["unique_key"]) if item["unique_key"] is not None else None
            if unique is not None:
                holder = claimed.get(unique) or unique_holder(*unique, at=submitted_at)
                if holder is not None:
                    answers[index] = holder
                    continue
            job = new_job(
                item, submitted_at=submitted_at, submitted_by=submitted_by, idempotency_key=key, fingerprint=fingerprint
            )
            new.append(job)
            new_parents.append(item.get("depends_on") or [])
            answers[index] = job
            if unique is not None:
                claimed[unique] = job
        if not new:
            return [job for job in answers if job is not None], False
        try:
            if any(new_parents):
                insert_dependents(new, new_parents, at=submitted_at, actor=submitted_by)
            else:
                insert_jobs(new, at=submitted_at, actor=submitted_by)
            break
        except IntegrityError:
            # Another request stored the jobs of this Idempotency-Key, or took one of the unique keys: look again.
            if not any_unique:
                existing = _jobs_for_batch_key(submitted_by, keys, fingerprint) if idempotency_key else None
                if existing is None:
                    raise
                return [job for job in existing if job is not None], False
    else:
        raise UniqueKeyContended()
    ready = [job for job in new if job.status in (S.QUEUED, S.SCHEDULED)]
    counts = [("jobs_submitted_total", (job.type,)) for job in ready]
    # As for one job: the rows are committed before any worker can see the jobs.
    if ready:
        transaction.on_commit(lambda: push_many(ready, counts=counts))
    count_submitted([job for job in new if job.status not in (S.QUEUED, S.SCHEDULED)])
    return [job for job in answers if job is not None], True


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


def _jobs_for_batch_key(
    submitted_by: str, keys: Sequence[str | None], fingerprint: str, partial: bool = False
) -> list[Job | None] | None:
    """The jobs stored under a batch's keys, in order, or None when there are none. Only a batch with
    unique items (`partial`) may have stored some of them (the others were answered by other jobs)."""
    stored = {
        job.idempotency_key: job for job in Job.objects.filter(submitted_by=submitted_by, idempotency_key__in=keys)
    }
    if not stored:
        return None
    if len(stored) != len(keys) and not partial:
        raise IdempotencyKeyReused()
    if any(job.request_fingerprint != fingerprint for job in stored.values()):
        raise IdempotencyKeyReused()
    return [stored.get(key) for key in keys]


def _job_for_idempotency_key(submitted_by: str, key: str | None, fingerprint: str) -> Job | None:
    existing = Job.objects.filter(submitted_by=submitted_by, idempotency_key=key).first()
    if existing is not None and fingerprint and existing.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    return existing
