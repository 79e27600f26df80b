"""Job graphs: a dependent's first status, the release of dependents when their parents finish, progress.

A job with parents waits in `waiting` (in the database only: Redis never holds it) until every parent
has finished. Then, by `dependents_release`:

- a parent `failed` or `cancelled` cancels the dependent, with the reason, unless the dependent allows
  failure (`allow_failure`, a workflow node's `"run_if": "finished"`); the cancel cascades to its own
  dependents by the same rule;
- once all its parents have finished (and none cancelled it), it is `queued` (or `scheduled` when its
  run_at is ahead) and pushed to Redis after the commit.

The release locks the waiting rows (id order) and reads their parents' statuses after the lock, in the
same transaction: two parents of one child finishing at once in two processes cannot both miss the
other's outcome, and the compare-and-set from `waiting` queues a child once. It runs right after a
parent's outcome is committed (jobs.services.lifecycle, jobs.services.runs); if the process dies in
between, the sentinel's pass runs it for whatever waiting job is ready (`waiting_ready`). A job queued
in the database whose push to Redis was lost is restored by the sentinel like any queued job.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import DatabaseError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from .. import metrics, store
from ..exceptions import InvalidTransition
from ..models import TERMINAL_STATUSES, Job, JobDependency, Workflow
from . import transitions
from .enqueue import push_many
from .transitions import S

logger = logging.getLogger(__name__)

BLOCKING = frozenset({S.FAILED, S.CANCELLED})
RELEASE_ACTOR = "release"


@dataclass(frozen=True)
class ParentState:
    """What a dependent needs to know of one parent."""

    name: str
    status: str


def blocking_parent(parents: Iterable[ParentState], *, allow_failure: bool) -> ParentState | None:
    """The parent whose failure or cancel cancels the dependent, or None."""
    if allow_failure:
        return None
    return next((parent for parent in parents if parent.status in BLOCKING), None)


def cancel_reason(parent: ParentState) -> str:
    return f"Cancelled: its parent {parent.name} {parent.status}."


def first_status(parents: list[ParentState], *, allow_failure: bool) -> tuple[str | None, str]:
    """A new dependent's status and error: `cancelled` (a parent failed), `waiting`, or None (ready: queued)."""
    blocker = blocking_parent(parents, allow_failure=allow_failure)
    if blocker is not None:
        return S.CANCELLED, cancel_reason(blocker)
    if all(parent.status in TERMINAL_STATUSES for parent in parents):
        return None, ""
    return S.WAITING, ""


def parent_name(job_id: object, node: str) -> str:
    return repr(node) if node else str(job_id)


def _ready_or_blocked(children: list[Job]) -> tuple[list[Job], list[tuple[Job, str]]]:
    """Of waiting children: those to queue, and those to cancel (with the reason); the rest keep waiting."""
    states: dict[int, list[ParentState]] = {child.pk: [] for child in children}
    rows = JobDependency.objects.filter(child_id__in=states).values_list(
        "child_id", "parent__job_id", "parent__node", "parent__status"
    )
    for child_pk, job_id, node, status in rows:
        states[child_pk].append(ParentState(parent_name(job_id, node), status))
    ready, blocked = [], []
    for child in children:
        parents = states[child.pk]
        blocker = blocking_parent(parents, allow_failure=child.allow_failure)
        if blocker is not None:
            blocked.append((child, cancel_reason(blocker)))
        elif all(parent.status in TERMINAL_STATUSES for parent in parents):
            ready.append(child)
    return ready, blocked


def dependents_release(
    *, parent_pks: Iterable[int], actor: str = RELEASE_ACTOR, workflow_ids: Iterable[str] | None = None
) -> list[Job]:
    """Queue the waiting dependents of these (finished) jobs whose parents have all finished, cancel those a
    failed parent cancels (and their dependents in turn); returns the jobs queued. Idempotent. Then mark
    finished the workflows (`workflow_ids`, else those of the parents) whose nodes have all finished."""
    frontier = set(parent_pks)
    if not frontier:
        return []
    released: list[Job] = []
    workflows = (
        {str(workflow) for workflow in workflow_ids}
        if workflow_ids is not None
        else {
            str(workflow)
            for workflow in Job.objects.filter(pk__in=frontier, workflow__isnull=False).values_list(
                "workflow_id", flat=True
            )
        }
    )
    # One read first, without a transaction: most finished jobs have no waiting dependent. A dependent stored
    # after this read saw its parent finished (insert_dependents locks the parent row the outcome updates).
    if JobDependency.objects.filter(parent_id__in=frontier, child__status=S.WAITING).exists():
        released = _release(frontier, actor=actor, workflows=workflows)
    for workflow_id in workflows:
        workflow_finish(workflow_id=workflow_id)
    return released


def _release(frontier: set[int], *, actor: str, workflows: set[str]) -> list[Job]:
    """dependents_release's transaction: returns the jobs queued, adds to `workflows` those of the jobs cancelled."""
    released: list[Job] = []
    cancelled: list[str] = []
    with transaction.atomic():
        while frontier:
            children = list(
                Job.objects.select_for_update()
                .filter(
                    status=S.WAITING, pk__in=JobDependency.objects.filter(parent_id__in=frontier).values("child_id")
                )
                .order_by("id")
            )
            if not children:
                break
            ready, blocked = _ready_or_blocked(children)
            frontier = set()
            now = transitions.now()
            backend = store.backend()
            for child in ready:
                scheduled = child.run_at is not None and child.run_at > now
                target = S.SCHEDULED if scheduled else S.QUEUED
                changes = {} if scheduled else {"enqueued_at": now}
                if backend.move(job=child, target=target, allowed=[S.WAITING], stamp=now, actor=actor, changes=changes):
                    child.status = target
                    for name, value in changes.items():
                        setattr(child, name, value)
                    released.append(child)
            for child, reason in blocked:
                if backend.move(
                    job=child,
                    target=S.CANCELLED,
                    allowed=[S.WAITING],
                    stamp=now,
                    actor=actor,
                    changes={"error": reason, "finished_at": now},
                ):
                    frontier.add(child.pk)
                    cancelled.append(child.type)
                    if child.workflow_id:
                        workflows.add(str(child.workflow_id))
        if released:
            jobs = list(released)
            # After the commit, as every enqueue: a worker must be able to read the row it takes.
            transaction.on_commit(lambda: push_many(jobs))
    if cancelled:  # counted once the cancels are committed
        with metrics.record() as batch:
            for job_type in cancelled:
                batch.inc("jobs_cancelled_total", job_type)
    if released:
        logger.info("released %d dependent job(s)", len(released))
    return released


def workflow_outcome(statuses: Iterable[str]) -> str:
    """A finished workflow's outcome from its nodes' statuses: failed, cancelled or succeeded."""
    seen = set(statuses)
    if S.FAILED in seen:
        return "failed"
    if S.CANCELLED in seen:
        return "cancelled"
    return "succeeded"


def workflow_finish(*, workflow_id: str) -> bool:
    """Mark a workflow whose nodes have all finished as finished, once (for its metric); True when this did."""
    statuses = list(Job.objects.filter(workflow_id=workflow_id).values_list("status", flat=True))
    if not statuses or any(status not in TERMINAL_STATUSES for status in statuses):
        return False
    outcome = workflow_outcome(statuses)
    marked = Workflow.objects.filter(workflow_id=workflow_id, finished_at__isnull=True).update(
        finished_at=transitions.now(), outcome=outcome
    )
    if marked:
        with metrics.record() as batch:
            batch.inc("workflows_finished_total", outcome)
    return bool(marked)


def waiting_ready() -> QuerySet[Job]:
    """Waiting jobs that a release would move now: every parent finished, or a parent failed or was
    cancelled that the job does not allow (the sentinel's repair of a release a process died before)."""
    links = JobDependency.objects.filter(child_id=OuterRef("pk"))
    unfinished = links.exclude(parent__status__in=TERMINAL_STATUSES)
    blocking = links.filter(parent__status__in=BLOCKING)
    return Job.objects.filter(status=S.WAITING).filter(
        ~Exists(unfinished) | (Q(allow_failure=False) & Exists(blocking))
    )


def waiting_repair(*, limit: int = 500) -> int:
    """Release what waits on parents that have all finished (a release lost with its process); the count moved."""
    # A workflow whose last node's process died before marking it finished.
    open_workflows = Workflow.objects.filter(finished_at__isnull=True).exclude(
        Exists(Job.objects.filter(workflow_id=OuterRef("workflow_id")).exclude(status__in=TERMINAL_STATUSES))
    )
    for workflow_id in open_workflows.values_list("workflow_id", flat=True)[:limit]:
        workflow_finish(workflow_id=str(workflow_id))
    children = list(waiting_ready().order_by("id").values_list("pk", flat=True)[:limit])
    if not children:
        return 0
    parents = set(JobDependency.objects.filter(child_id__in=children).values_list("parent_id", flat=True))
    before = Job.objects.filter(pk__in=children, status=S.WAITING).count()
    dependents_release(parent_pks=parents, actor="sentinel")
    after = Job.objects.filter(pk__in=children, status=S.WAITING).count()
    if before - after:
        logger.warning("sentinel: released %d waiting job(s) whose parents had finished", before - after)
    return before - after


# --------------------------------------------------------------------------- progress

PROGRESS_INTERVAL = 1.0  # seconds between two progress writes of one run (the last one always lands)


class ProgressReporter:
    """A run's `context.set_progress(fraction, message)`: at most one write a PROGRESS_INTERVAL (the first,
    and 1.0, always), so a handler may call it in a tight loop. The write does not touch updated_at, which
    the sentinel's compare-and-set pins."""

    def __init__(self, job_pk: int) -> None:
        self.job_pk = job_pk
        self.last_write = float("-inf")

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = float(fraction)
        if math.isnan(fraction):
            raise ValueError("progress must be a number from 0 to 1")
        fraction = min(1.0, max(0.0, fraction))
        clock = time.monotonic()
        if fraction < 1.0 and clock - self.last_write < PROGRESS_INTERVAL:
            return
        self.last_write = clock
        Job.objects.filter(pk=self.job_pk).exclude(status__in=TERMINAL_STATUSES).update(
            progress=fraction, progress_message=str(message)[:200]
        )


def release_after_outcome(jobs: Iterable[Job]) -> None:
    """dependents_release after the outcomes of `jobs` were committed. A database error here loses nothing: the
    outcomes are durable and the sentinel's waiting_repair releases what this would have (see the module
    docstring)."""
    jobs = list(jobs)
    workflow_ids = {str(job.workflow_id) for job in jobs if job.workflow_id}
    try:
        # (Looked up in the module at call time: a reliability drill replaces it in a worker to die here.)
        dependents_release(parent_pks=[job.pk for job in jobs], workflow_ids=workflow_ids)
    except DatabaseError as error:
        logger.warning("release of dependents deferred to the sentinel: %s", error)


def parents_of(job: Job) -> list[Job]:
    return list(Job.objects.filter(child_links__child_id=job.pk).only("pk"))


def retry_must_wait(job: Job) -> bool:
    """Whether a manual retry of `job` makes it wait for its parents (True), or queues it (False, also for a
    job without parents); InvalidTransition while a parent it needs has failed or is cancelled."""
    rows = JobDependency.objects.filter(child_id=job.pk).values_list("parent__job_id", "parent__node", "parent__status")
    parents = [ParentState(parent_name(job_id, node), status) for job_id, node, status in rows]
    if not parents:
        return False
    blocker = blocking_parent(parents, allow_failure=job.allow_failure)
    if blocker is not None:
        raise InvalidTransition(
            f"Job {job.job_id} needs its parent {blocker.name}, which {blocker.status}: retry it first."
        )
    return any(parent.status not in TERMINAL_STATUSES for parent in parents)
