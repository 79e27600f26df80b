"""Retention: finished jobs past their max age are deleted with their timelines, in bounded batches.

Which rows may go is decided by one selector, `prunable_jobs` below (here, not in jobs.selectors,
which the services may not import). Each batch is one short transaction: it locks at most
RETENTION_BATCH_SIZE of those rows (skipping rows another transaction holds), checks them against
the selector under the lock (a failed job retried meanwhile is no longer prunable), and deletes
them and their JobEvent rows. Readers of the list never wait for more than one batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from .. import metrics
from ..models import TERMINAL_STATUSES, CallbackStatus, Job, JobDependency, JobEvent, JobStatus
from . import transitions

logger = logging.getLogger(__name__)


def retention_ages() -> dict[str, dict[str, timedelta | None]]:
    """The max age of finished jobs: {"status": {status: age}, "type": {job type: age}}; None keeps them for good."""

    def age(days: float) -> timedelta | None:
        return timedelta(days=days) if days > 0 else None

    return {
        "status": {status: age(days) for status, days in settings.SENTINELFLOW_RETENTION_DAYS.items()},
        "type": {job_type: age(days) for job_type, days in settings.SENTINELFLOW_RETENTION_BY_TYPE.items()},
    }


def prunable_jobs(*, now: datetime) -> QuerySet[Job]:
    """The jobs retention may delete now: the ONE place that decides which rows may go.

    Finished (succeeded, failed, cancelled) longer ago than their max age: the job type's
    (RETENTION_BY_TYPE, any status) when it has one, else the status's. Never an unfinished
    job, nor one whose completion callback is still to be delivered, nor a parent with a dependent that
    has not finished (it waits for the parent, or will read its result in context.parents). Further
    conditions belong here too, so that every caller honours them.
    """
    ages = retention_ages()
    by_type = ages["type"]
    due = Q(pk__in=[])  # nothing, until an age applies
    for status, max_age in ages["status"].items():
        if max_age is not None:
            due |= Q(status=status, finished_at__lt=now - max_age) & ~Q(type__in=list(by_type))
    for job_type, max_age in by_type.items():
        if max_age is not None:
            due |= Q(type=job_type, status__in=list(ages["status"]), finished_at__lt=now - max_age)
    finished = Job.objects.filter(due, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
    # A callback still to be delivered needs its job: the job goes once it is delivered or given up.
    needed = JobDependency.objects.filter(parent=OuterRef("pk")).exclude(child__status__in=TERMINAL_STATUSES)
    return finished.exclude(callback_status=CallbackStatus.PENDING).exclude(Exists(needed))


@dataclass
class PruneReport:
    """What a prune deleted (or, in a dry run, would delete): jobs per status, and their timeline rows."""

    jobs: Counter[str] = field(default_factory=Counter)
    events: int = 0
    batches: int = 0
    dry_run: bool = False

    @property
    def total(self) -> int:
        return sum(self.jobs.values())

    def summary(self) -> str:
        per_status = ", ".join(f"{status} {count}" for status, count in sorted(self.jobs.items())) or "none"
        verb = "would delete" if self.dry_run else "deleted"
        events = "" if self.dry_run else f" and {self.events} timeline rows in {self.batches} batches"
        return f"{verb} {self.total} finished jobs ({per_status}){events}"


def jobs_prune_count(*, now: datetime | None = None) -> PruneReport:
    """What jobs_prune would delete now, counted per status; deletes nothing."""
    rows = prunable_jobs(now=now or transitions.now()).order_by().values("status").annotate(n=Count("id"))
    return PruneReport(jobs=Counter({row["status"]: row["n"] for row in rows}), dry_run=True)


def jobs_prune(
    *,
    now: datetime | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    between_batches: Callable[[], None] | None = None,
) -> PruneReport:
    """Delete prunable jobs and their timeline rows, `batch_size` jobs per transaction, at most `limit` jobs.

    `between_batches` is called after each batch (the sentinel refreshes its lock there). Counted in
    jobs_pruned_total{type,status}.
    """
    now = now or transitions.now()
    size = batch_size or settings.SENTINELFLOW_RETENTION_BATCH_SIZE
    report = PruneReport()
    after = 0
    while limit is None or report.total < limit:
        take = size if limit is None else min(size, limit - report.total)
        deleted = _prune_batch(now=now, size=take, after=after)
        if not deleted:
            break
        after = deleted[2]
        report.batches += 1
        report.events += deleted[1]
        per_label = Counter((job_type, status) for job_type, status in deleted[0])
        report.jobs.update(status for _job_type, status in deleted[0])
        with metrics.record() as batch:
            for (job_type, status), count in per_label.items():
                batch.inc("jobs_pruned_total", job_type, status, amount=count)
        if len(deleted[0]) < take:
            break
        if between_batches is not None:
            between_batches()
    if report.total:
        logger.info("retention: %s", report.summary())
    return report


def _prune_batch(*, now: datetime, size: int, after: int) -> tuple[list[tuple[str, str]], int, int] | None:
    """One batch in one transaction, of the jobs with ids above `after`: ([(type, status)] of the deleted
    jobs, timeline rows deleted, the last id); None if none."""
    with transaction.atomic():
        # From where the last batch stopped: the index entries of rows just deleted stay until VACUUM,
        # and starting each batch at the first id would walk over all of them again.
        candidates = prunable_jobs(now=now).filter(pk__gt=after).order_by("id")
        # Rows another transaction holds (a retry in flight) are skipped, not waited for; SQLite ignores this.
        locked = list(
            candidates.select_for_update(skip_locked=True, of=("self",)).values_list("id", "type", "status")[:size]
        )
        if not locked:
            return None
        ids = [pk for pk, _type, _status in locked]
        events, _ = JobEvent.objects.filter(job_id__in=ids).delete()
        # Through the ORM: rows that point at a job (a schedule's last job) are updated as their FKs say.
        # Only the ids are read for that (not the payloads and results of a thousand rows).
        Job.objects.filter(pk__in=ids).only("id").delete()
    return [(job_type, status) for _pk, job_type, status in locked], events, ids[-1]
