"""The ORM backend of the store, for every database: each write and its timeline row in one transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction

from ..models import Job, JobDependency, JobEvent, JobStatus
from .records import RunOutcome


class OrmStore:
    """The store's operations through the Django ORM (the contract jobs.store.postgres also keeps)."""

    name = "orm"

    def move(
        self,
        *,
        job: Job,
        target: str,
        allowed: list[str],
        stamp: datetime,
        actor: str,
        changes: dict[str, Any],
        expect_attempts: int | None = None,
        expect_updated_at: datetime | None = None,
    ) -> bool:
        """Compare-and-set: move the row of `job` to `target` (updated_at = stamp, plus `changes`) if its
        status is in `allowed` and its attempts and updated_at are those expected, and write the timeline
        row. False, and nothing written, when the row did not match."""
        match: dict[str, Any] = {"attempts": expect_attempts, "updated_at": expect_updated_at}
        match = {name: value for name, value in match.items() if value is not None}
        with transaction.atomic():
            updated = Job.objects.filter(pk=job.pk, status__in=allowed, **match).update(
                status=target, updated_at=stamp, **changes
            )
            if updated:
                JobEvent.objects.create(job_id=job.pk, at=stamp, from_status=job.status, to_status=target, actor=actor)
        return bool(updated)

    def start(
        self, *, job_id: str, allowed: list[str], stamp: datetime, actor: str, changes: dict[str, Any]
    ) -> Job | None:
        """Move the job `job_id` to `started` if its status is in `allowed`, counting an attempt, and
        return it as stored; None when it is unknown or did not match (a duplicate delivery that
        started meanwhile wins: the attempt count is compared too)."""
        job = Job.objects.filter(job_id=job_id).first()
        if job is None:
            return None
        changes = {**changes, "attempts": job.attempts + 1}
        target = JobStatus.STARTED
        if not self.move(
            job=job,
            target=target,
            allowed=allowed,
            stamp=stamp,
            actor=actor,
            changes=changes,
            expect_attempts=job.attempts,
        ):
            return None
        for field, value in {"status": target, "updated_at": stamp, **changes}.items():
            setattr(job, field, value)
        return job

    def insert(self, jobs: list[Job], *, at: datetime, actor: str) -> None:
        """Store new jobs and their first timeline rows, all or nothing; sets their pk."""
        with transaction.atomic():
            if len(jobs) == 1:
                jobs[0].save()
            else:
                Job.objects.bulk_create(jobs)
            JobEvent.objects.bulk_create(JobEvent(job=job, at=at, to_status=job.status, actor=actor) for job in jobs)

    def finish_runs(self, outcomes: list[RunOutcome], *, stamp: datetime) -> set[int]:
        """Record the outcomes of runs, all in one transaction (one commit for the lot); returns the pks of
        the jobs that moved. See RunOutcome for the compare-and-set of each."""
        moved = set()
        with transaction.atomic():
            for outcome in outcomes:
                job = outcome.job
                if outcome.start_recorded:
                    match = Job.objects.filter(pk=job.pk, status=JobStatus.STARTED, attempts=outcome.attempt)
                else:
                    match = Job.objects.filter(pk=job.pk, status__in=outcome.runnable, attempts=outcome.attempt - 1)
                changes = {"attempts": outcome.attempt, "started_at": outcome.started_at}
                changes |= {"finished_at": outcome.finished_at, **outcome.changes}
                if not match.update(status=outcome.target, updated_at=stamp, **changes):
                    continue
                moved.add(job.pk)
                JobEvent.objects.bulk_create(
                    JobEvent(job_id=job.pk, at=at, from_status=source, to_status=target, actor=outcome.actor)
                    for at, source, target in outcome.events(job.status)
                )
            parents = set(JobDependency.objects.filter(parent_id__in=moved).values_list("parent_id", flat=True))
        for outcome in outcomes:
            outcome.has_dependents = outcome.job.pk in parents
        return moved
