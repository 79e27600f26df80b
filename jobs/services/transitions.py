"""The lifecycle table, the compare-and-set that applies it, and the clock.

Every other module of jobs.services moves a job through `transition`, so each move is checked
against ALLOWED_TRANSITIONS in one place. A move is `UPDATE ... WHERE status IN (allowed)` with
its row count checked: two processes racing on one job cannot both win.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from .. import store
from ..exceptions import InvalidTransition
from ..models import Job, JobStatus

S = JobStatus
# Which statuses each status may move to: the lifecycle of docs/design.md.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.QUEUED, S.SCHEDULED, S.STARTED, S.CANCELLED}),
    # Released when its parents have finished (jobs.services.dependencies), or cancelled with them.
    S.WAITING: frozenset({S.QUEUED, S.SCHEDULED, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.QUEUED, S.STARTED, S.PENDING, S.CANCELLED}),
    S.QUEUED: frozenset({S.STARTED, S.PENDING, S.CANCELLED}),
    # `queued` from `started`: the sentinel re-runs a job whose worker died.
    S.STARTED: frozenset({S.SUCCEEDED, S.FAILED, S.RETRYING, S.QUEUED, S.CANCELLED}),
    S.RETRYING: frozenset({S.QUEUED, S.STARTED, S.PENDING, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    # A manual retry; `waiting` for a dependent whose parents have not all finished again.
    S.FAILED: frozenset({S.QUEUED, S.WAITING}),
    S.CANCELLED: frozenset({S.QUEUED, S.WAITING}),
}
RUNNABLE_STATUSES = frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if S.STARTED in targets)


def now() -> datetime:
    """The one clock of the services; tests patch it here (siblings call `transitions.now()`)."""
    return timezone.now()


def sources_of(target: str) -> list[str]:
    """The statuses from which a job may move to `target`."""
    return [source for source, targets in ALLOWED_TRANSITIONS.items() if target in targets]


def transition(
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
    stamp = now()
    moved = store.backend().move(
        job=job,
        target=target,
        allowed=sources if sources is not None else sources_of(target),
        stamp=stamp,
        actor=actor,
        changes=changes,
        expect_attempts=expect_attempts,
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
