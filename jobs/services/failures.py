"""Failure groups: retry every failed job of one group (type and error fingerprint) at once."""

from __future__ import annotations

import logging

from ..exceptions import InvalidTransition
from ..models import Job, JobStatus
from .audit import audit_record
from .lifecycle import job_retry

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


def failure_group_retry(*, job_type: str, fingerprint: str, actor: str) -> int:
    """Retry the failed jobs of the group `job_type`/`fingerprint` through job_retry; returns how many moved.

    Each job is one compare-and-set with its own timeline row naming `actor` (a job retried or
    cancelled meanwhile is skipped), read in id order BATCH_SIZE at a time so that no long lock
    is held; the group as a whole is audited once (AuditEntry `jobs.retry_group`, its type as target).
    """
    retried, last = 0, 0
    group = Job.objects.filter(status=JobStatus.FAILED, type=job_type, error_fingerprint=fingerprint)
    while True:
        batch = list(group.filter(pk__gt=last).order_by("id")[:BATCH_SIZE])
        if not batch:
            break
        last = batch[-1].pk
        for job in batch:
            try:
                job_retry(job=job, actor=actor)
            except InvalidTransition:
                continue  # retried, or otherwise moved, since it was read
            retried += 1
    audit_record(
        actor=actor,
        action="jobs.retry_group",
        target=job_type,
        detail={"type": job_type, "fingerprint": fingerprint, "changed": retried},
    )
    return retried
