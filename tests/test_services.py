"""jobs.services: the lifecycle's legal and illegal transitions, retries and backoff."""

from __future__ import annotations

import itertools

import pytest

from jobs import services
from jobs.exceptions import InvalidTransition
from jobs.models import Job, JobStatus
from jobs.services import transitions
from tests.factories import make_job

# Every transition runs on each store backend the test database has (see store_backend).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("store_backend")]

S = JobStatus
LEGAL = {
    (S.PENDING, S.QUEUED),
    (S.PENDING, S.SCHEDULED),
    (S.PENDING, S.STARTED),
    (S.PENDING, S.CANCELLED),
    (S.SCHEDULED, S.QUEUED),
    (S.SCHEDULED, S.STARTED),
    (S.SCHEDULED, S.PENDING),
    (S.SCHEDULED, S.CANCELLED),
    (S.QUEUED, S.STARTED),
    (S.QUEUED, S.PENDING),
    (S.QUEUED, S.CANCELLED),
    (S.STARTED, S.SUCCEEDED),
    (S.STARTED, S.FAILED),
    (S.STARTED, S.RETRYING),
    (S.STARTED, S.QUEUED),
    (S.STARTED, S.CANCELLED),
    (S.RETRYING, S.QUEUED),
    (S.RETRYING, S.STARTED),
    (S.RETRYING, S.PENDING),
    (S.RETRYING, S.CANCELLED),
    (S.FAILED, S.QUEUED),
    (S.CANCELLED, S.QUEUED),
    (S.WAITING, S.QUEUED),
    (S.WAITING, S.SCHEDULED),
    (S.WAITING, S.CANCELLED),
    (S.FAILED, S.WAITING),
    (S.CANCELLED, S.WAITING),
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(S.values, S.values)))
def test_transition_table(source, target):
    job = make_job(status=source)

    if (source, target) in LEGAL:
        assert transitions.transition(job, target).status == target
    else:
        with pytest.raises(InvalidTransition):
            transitions.transition(job, target)
        assert Job.objects.get(pk=job.pk).status == source


def test_terminal_statuses_are_the_design_ones():
    assert {s for s in S.values if make_job(status=s).is_terminal} == {S.SUCCEEDED, S.FAILED, S.CANCELLED}


def test_start_counts_an_attempt_and_refuses_jobs_not_runnable():
    job = make_job(status=S.QUEUED)

    assert services.job_start(job_id=str(job.job_id)).attempts == 1
    assert services.job_start(job_id=str(job.job_id)) is None  # already started: a duplicate delivery
    assert services.job_start(job_id=str(make_job(status=S.CANCELLED).job_id)) is None
    assert Job.objects.get(pk=job.pk).attempts == 1


def test_worker_transitions_return_the_stored_row_and_log_where_each_move_came_from(no_backoff):
    """job_start/job_fail_attempt/job_succeed: one SQL statement each on PostgreSQL, the ORM elsewhere."""
    job = make_job(status=S.RETRYING, payload={"nested": [1, {"a": None}]}, max_retries=1)

    started = services.job_start(job_id=str(job.job_id), actor="worker:w1")
    stored = Job.objects.get(pk=job.pk)
    fields = [field.attname for field in Job._meta.concrete_fields]
    assert {name: getattr(started, name) for name in fields} == {name: getattr(stored, name) for name in fields}
    assert (stored.status, stored.attempts, stored.payload) == (S.STARTED, 1, {"nested": [1, {"a": None}]})

    assert services.job_fail_attempt(job=started, error=RuntimeError("first"), actor="worker:w1") == 0
    again = services.job_start(job_id=str(job.job_id), actor="worker:w2")
    assert services.job_succeed(job=again, result={"ok": [1, 2]}, actor="worker:w2").status == S.SUCCEEDED

    stored = Job.objects.get(pk=job.pk)
    assert (stored.status, stored.attempts, stored.result) == (S.SUCCEEDED, 2, {"ok": [1, 2]})
    assert stored.started_at <= stored.finished_at <= stored.updated_at
    assert list(stored.events.order_by("id").values_list("from_status", "to_status", "actor")) == [
        (S.RETRYING, S.STARTED, "worker:w1"),
        (S.STARTED, S.RETRYING, "worker:w1"),
        (S.RETRYING, S.STARTED, "worker:w2"),
        (S.STARTED, S.SUCCEEDED, "worker:w2"),
    ]


def test_a_late_outcome_of_an_older_attempt_changes_nothing():
    first = services.job_start(job_id=str(make_job().job_id))
    transitions.transition(first, S.QUEUED, actor="sentinel")  # given up for lost and sent round again
    services.job_start(job_id=str(first.job_id))

    assert services.job_succeed(job=first, result="late") is None
    stored = Job.objects.get(pk=first.pk)
    assert (stored.status, stored.attempts, stored.result) == (S.STARTED, 2, None)
    assert stored.events.count() == 3


def test_success_after_cancel_keeps_the_job_cancelled():
    job = services.job_start(job_id=str(make_job().job_id))
    services.job_cancel(job=job, actor="test")

    assert services.job_succeed(job=job, result={"late": True}) is None
    assert Job.objects.get(pk=job.pk).status == S.CANCELLED


def test_failed_attempts_retry_until_budget_is_spent(no_backoff):
    job = make_job(max_retries=2)
    outcomes = []
    for _ in range(3):
        job = services.job_start(job_id=str(job.job_id))
        outcomes.append(services.job_fail_attempt(job=job, error=RuntimeError("boom")))
        job.refresh_from_db()

    assert outcomes == [0, 0, None]
    assert (job.status, job.attempts) == (S.FAILED, 3)
    assert "RuntimeError: boom" in job.error


def test_permanent_error_fails_without_retry():
    job = services.job_start(job_id=str(make_job(max_retries=5).job_id))

    assert services.job_fail_attempt(job=job, error=services.PermanentJobError("no")) is None
    assert Job.objects.get(pk=job.pk).status == S.FAILED


def test_retrying_job_gets_run_at_of_its_backoff(settings):
    settings.SENTINELFLOW_RETRY_BACKOFF_BASE = 10
    job = services.job_start(job_id=str(make_job(max_retries=1).job_id))

    delay = services.job_fail_attempt(job=job, error=RuntimeError("x"))

    job.refresh_from_db()
    assert job.status == S.RETRYING
    assert 5 <= delay <= 10
    assert 0 <= delay - (job.run_at - job.finished_at).total_seconds() < 1  # run_at is whole seconds


def test_backoff_is_exponential_jittered_and_capped(settings):
    settings.SENTINELFLOW_RETRY_BACKOFF_BASE = 2
    settings.SENTINELFLOW_RETRY_BACKOFF_MAX = 60
    samples = {n: [services.retry_backoff(n) for _ in range(200)] for n in (1, 2, 3, 4, 10)}

    ceilings = {1: 2, 2: 4, 3: 8, 4: 16, 10: 60}  # base * 2**(n-1), capped at 60

    for n, ceiling in ceilings.items():
        assert ceiling // 2 <= min(samples[n]) and max(samples[n]) <= ceiling, (n, min(samples[n]), max(samples[n]))
    assert len(set(samples[10])) > 5  # jitter spreads retries out


def test_manual_retry_keeps_attempts_and_grants_a_fresh_budget(no_backoff):
    job = make_job(max_retries=0)
    job = services.job_start(job_id=str(job.job_id))
    services.job_fail_attempt(job=job, error=RuntimeError("x"))
    job.refresh_from_db()
    assert job.status == S.FAILED

    job = services.job_retry(job=job, actor="test")
    assert (job.status, job.attempts, job.budget_start) == (S.QUEUED, 1, 1)
    job = services.job_start(job_id=str(job.job_id))
    assert services.job_fail_attempt(job=job, error=RuntimeError("x")) is None
    assert Job.objects.get(pk=job.pk).attempts == 2
