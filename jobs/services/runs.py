"""Runs taken in batches by the worker (jobs.worker): one durable write per run, outcomes group-committed.

The per-job path (lifecycle.job_start, then job_succeed or job_fail_attempt) writes a row twice
per run. A worker that takes several jobs per round trip records them like this instead:

1. `runs_claim` reads the rows of the taken jobs in one query; only runnable ones run.
2. `run_begin` notes the start time in memory. The row still says what it said (`queued`).
3. A run still going after START_RECORD_AFTER seconds has its start written by the worker's
   recorder thread (`run_record_start`), so a long job shows `started` in the API, can be
   cancelled on its worker, and is recovered by the sentinel if its process dies.
4. `run_outcome` applies the rules of lifecycle (success, retry with backoff, failure) to the
   finished run; `runs_finish` writes the outcomes of the batch together, one statement on
   PostgreSQL, one transaction elsewhere. A short run goes from its runnable status straight to
   its outcome, its timeline showing both steps at their exact times.

Liveness does not need the start row: every taken job has a lease from the moment it is taken
(jobs.redis_store), and the sentinel restores a queued job only when no process holds its lease.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet

from .. import metrics, store
from ..exceptions import PermanentJobError
from ..models import Job
from ..store.records import RunOutcome
from . import dependencies, transitions
from .callbacks import callbacks_after_finish
from .fingerprints import error_fingerprint
from .lifecycle import _jsonable, attempts_spent, count_start, format_error, retry_backoff
from .transitions import ALLOWED_TRANSITIONS, RUNNABLE_STATUSES, S

logger = logging.getLogger(__name__)

# A run still going after this many seconds has its start written (it then shows `started`).
START_RECORD_AFTER = 1.0
RUNNABLE = sorted(RUNNABLE_STATUSES)
OUTCOMES = frozenset({S.SUCCEEDED, S.FAILED, S.RETRYING})
assert OUTCOMES <= ALLOWED_TRANSITIONS[S.STARTED]  # every outcome is a move the lifecycle allows


@dataclass
class Run:
    """One run of a job taken in a batch; `lock` orders the recorder's start write and the outcome."""

    job: Job
    attempt: int
    actor: str
    started_at: datetime
    start_recorded: bool = False
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def runs_claim(job_ids: list[str]) -> dict[str, Job]:
    """The rows of the jobs among `job_ids` that may run now, by job id (one query)."""
    rows: QuerySet[Job] = Job.objects.filter(job_id__in=job_ids, status__in=RUNNABLE).defer("result", "error")
    return {str(job.job_id): job for job in rows}


def run_begin(job: Job, *, actor: str) -> Run:
    """Note that a run of `job` starts now; `job.attempts` then counts it, as after lifecycle.job_start."""
    run = Run(job=job, attempt=job.attempts + 1, actor=actor, started_at=transitions.now())
    job.attempts = run.attempt
    job.started_at = run.started_at
    return run


def run_record_start(run: Run) -> bool:
    """Write the start of a run still going (the recorder thread's call). False when the run ended,
    or the row moved meanwhile (cancelled, or restarted elsewhere)."""
    with run.lock:
        if run.finished or run.start_recorded:
            return False
        job = run.job
        run.start_recorded = store.backend().move(
            job=job,
            target=S.STARTED,
            allowed=RUNNABLE,
            stamp=run.started_at,
            actor=run.actor,
            changes={"attempts": run.attempt, "started_at": run.started_at, "finished_at": None},
            expect_attempts=run.attempt - 1,
        )
        if not run.start_recorded:
            return False
    with metrics.record() as batch:
        count_start(batch, job, run.started_at)
    return True


def run_outcome(run: Run, *, result: Any = None, error: BaseException | None = None) -> RunOutcome:
    """The outcome of a finished run by lifecycle's rules: succeeded, or retrying (with its backoff) while
    the budget lasts, else failed. From now on the recorder leaves the run alone."""
    with run.lock:
        run.finished = True
    job = run.job
    finished_at = transitions.now()
    outcome = RunOutcome(
        job=job,
        attempt=run.attempt,
        started_at=run.started_at,
        finished_at=finished_at,
        target=S.SUCCEEDED,
        actor=run.actor,
        start_recorded=run.start_recorded,
        runnable=RUNNABLE,
    )
    if error is None:
        outcome.changes = {"result": _jsonable(result)}
        return outcome
    retry = not isinstance(error, PermanentJobError) and not attempts_spent(job)
    outcome.changes = {"error": format_error(error), "error_fingerprint": error_fingerprint(error)}
    outcome.target = S.RETRYING if retry else S.FAILED
    if retry:
        outcome.retry_in = retry_backoff(job.attempts - job.budget_start)
        # As lifecycle.job_fail_attempt: the whole second below the due time, so started_at >= run_at holds.
        due = finished_at + timedelta(seconds=outcome.retry_in)
        outcome.changes["run_at"] = due.replace(microsecond=0)
    return outcome


def runs_finish(outcomes: list[RunOutcome], *, batch: metrics.MetricsBatch) -> set[int]:
    """Record the outcomes (one durable write for them all) and count them in `batch`, which the caller
    sends after adding its own Redis bookkeeping. Returns the pks of the jobs that moved; an outcome
    whose job was cancelled or given up for lost meanwhile is dropped."""
    if not outcomes:
        return set()
    moved = store.backend().finish_runs(outcomes, stamp=transitions.now())
    callbacks_after_finish(o.job for o in outcomes if o.job.pk in moved and o.target != S.RETRYING)
    for outcome in outcomes:
        job = outcome.job
        if job.pk not in moved:
            continue
        if not outcome.start_recorded:
            count_start(batch, job, outcome.started_at)
        batch.observe("job_duration_seconds", job.type, (outcome.finished_at - outcome.started_at).total_seconds())
        if outcome.target == S.SUCCEEDED:
            batch.inc("jobs_succeeded_total", job.type)
        elif outcome.target == S.RETRYING:
            batch.inc("jobs_retried_total", job.type, "auto")
            batch.inc("jobs_enqueued_total", job.type, job.queue)
        else:
            batch.inc("jobs_failed_total", job.type)
    # Dependents are released after the outcomes' commit; if this process dies first, the sentinel does it.
    # (A workflow's node without dependents may be the one that finishes its workflow.)
    finished = [
        outcome.job
        for outcome in outcomes
        if (outcome.has_dependents or outcome.job.workflow_id)
        and outcome.job.pk in moved
        and outcome.target != S.RETRYING
    ]
    if finished:
        dependencies.release_after_outcome(finished)
    return moved


def cancelled_among(pks: set[int]) -> set[int]:
    """Which of these jobs are cancelled now (to tell a dropped outcome's reason)."""
    if not pks:
        return set()
    return set(Job.objects.filter(pk__in=pks, status=S.CANCELLED).values_list("pk", flat=True))
