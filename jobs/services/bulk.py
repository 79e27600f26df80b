"""Retry or cancel every job a filter selects: the API's /jobs/bulk/* and the admin's actions.

Each job goes through the single-job service (job_retry, job_cancel), so the rules, the timeline rows
and the Redis side are those of a single retry or cancel. The set is walked in batches by primary key,
newest first, each job with its own short compare-and-set: no lock is held across jobs, and a job that
moved meanwhile is skipped, not forced. Jobs created after the action began are left alone (the walk
starts at the highest id matched then). The action is audited once (AuditEntry `jobs.bulk_retry` or
`jobs.bulk_cancel`, no target) with its filter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Max, QuerySet

from ..exceptions import InvalidTransition
from ..models import Job
from .audit import audit_record
from .lifecycle import job_cancel, job_retry
from .transitions import S, sources_of

# Jobs read per query; each is then moved on its own.
BULK_BATCH_SIZE = 500
# Refusals listed by id in the result (the admin shows them); the rest are only counted.
REFUSAL_SAMPLE = 10

ACTIONS: dict[str, tuple[Callable[..., Job], str]] = {
    "retry": (job_retry, S.QUEUED),
    "cancel": (job_cancel, S.CANCELLED),
}
# The statuses each action may start from (job_retry's `sources`; job_cancel's are those of the table).
ELIGIBLE = {"retry": [S.FAILED, S.CANCELLED], "cancel": sources_of(S.CANCELLED)}


@dataclass
class BulkResult:
    matched: int
    changed: int = 0
    # (job_id, why) for the first REFUSAL_SAMPLE matched jobs that were not changed.
    refused: list[tuple[str, str]] = field(default_factory=list)


def jobs_bulk(
    *, action: str, queryset: QuerySet[Job], actor: str, filter: dict[str, Any], dry_run: bool = False
) -> BulkResult:
    """Apply `action` ("retry" or "cancel") to every job of `queryset`, in batches; a dry run only counts.

    Returns how many jobs matched and how many changed. Jobs in a status the action cannot start from
    are refused (counted, a few named). Unless a dry run, writes one AuditEntry with `filter`.
    """
    service, target = ACTIONS[action]
    eligible_statuses = ELIGIBLE[action]
    top = queryset.aggregate(top=Max("pk"))["top"]
    matched = queryset.filter(pk__lte=top).count() if top is not None else 0
    result = BulkResult(matched=matched)
    if dry_run or top is None:
        return result
    # Read before the walk, which moves the eligible ones out of their status.
    ineligible = queryset.filter(pk__lte=top).exclude(status__in=eligible_statuses).order_by("-pk")
    for job in ineligible[:REFUSAL_SAMPLE]:
        _note_refusal(result, job, f"Job {job.job_id} is {job.status}; it cannot become {target}.")
    cursor = top + 1
    eligible = queryset.filter(status__in=eligible_statuses)
    while True:
        batch = list(eligible.filter(pk__lt=cursor).order_by("-pk")[:BULK_BATCH_SIZE])
        if not batch:
            break
        cursor = batch[-1].pk
        for job in batch:
            try:
                service(job=job, actor=actor)
                result.changed += 1
            except InvalidTransition as error:  # it moved since the batch was read
                _note_refusal(result, job, error.detail)
    audit_record(
        actor=actor,
        action=f"jobs.bulk_{action}",
        detail={"filter": filter, "matched": result.matched, "changed": result.changed},
    )
    return result


def _note_refusal(result: BulkResult, job: Job, why: str) -> None:
    if len(result.refused) < REFUSAL_SAMPLE:
        result.refused.append((str(job.job_id), why))
