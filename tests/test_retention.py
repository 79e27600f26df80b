"""Retention: finished jobs past their age go, with their timelines, in bounded batches; nothing else does.

Also `manage.py prune_jobs`, the sentinel's pruning, jobs_pruned_total, and the bound on stored results.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command

from jobs import services
from jobs.models import Job, JobDependency, JobEvent, JobStatus, Schedule
from jobs.sentinel import Sentinel
from tests.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)
S = JobStatus


def aged(status: str, days: float, **fields) -> Job:
    """A job in `status` that finished `days` ago, with two timeline rows."""
    now = services.now()
    job = make_job(status=status, finished_at=now - timedelta(days=days), **fields)
    JobEvent.objects.create(job=job, to_status=S.QUEUED, actor="test")
    JobEvent.objects.create(job=job, from_status=S.QUEUED, to_status=status, actor="test")
    return job


def alive(job: Job) -> bool:
    return Job.objects.filter(pk=job.pk).exists()


def test_default_ages_per_status_prune_only_what_is_older():
    old_success, young_success = aged(S.SUCCEEDED, 7.1), aged(S.SUCCEEDED, 6.9)
    old_failure, young_failure = aged(S.FAILED, 30.1), aged(S.FAILED, 29.9)
    old_cancel, young_cancel = aged(S.CANCELLED, 31), aged(S.CANCELLED, 29)
    report = services.jobs_prune()
    assert dict(report.jobs) == {S.SUCCEEDED: 1, S.FAILED: 1, S.CANCELLED: 1}
    assert [alive(job) for job in (old_success, old_failure, old_cancel)] == [False, False, False]
    assert [alive(job) for job in (young_success, young_failure, young_cancel)] == [True, True, True]


def test_timeline_rows_go_with_their_job():
    old, young = aged(S.SUCCEEDED, 10), aged(S.SUCCEEDED, 1)
    report = services.jobs_prune()
    assert report.events == 2
    assert not JobEvent.objects.filter(job_id=old.pk).exists()
    assert JobEvent.objects.filter(job_id=young.pk).count() == 2


@pytest.mark.parametrize("status", [S.PENDING, S.SCHEDULED, S.QUEUED, S.STARTED, S.RETRYING])
def test_unfinished_jobs_are_never_pruned_however_old(status, settings):
    settings.SENTINELFLOW_RETENTION_BY_TYPE = {"echo": 0.001}
    job = aged(status, 400)
    Job.objects.filter(pk=job.pk).update(created_at=services.now() - timedelta(days=400))
    assert services.jobs_prune().total == 0
    assert alive(job)


def test_type_override_wins_over_the_status_age(settings):
    settings.SENTINELFLOW_RETENTION_BY_TYPE = {"report": 1, "sleep": 0}
    report_job = aged(S.FAILED, 2, type="report")  # 2 days: past report's 1 day, within failed's 30
    kept_forever = aged(S.SUCCEEDED, 300, type="sleep")  # 0: kept for good
    echo_job = aged(S.SUCCEEDED, 2)  # no override: 7 days
    services.jobs_prune()
    assert (alive(report_job), alive(kept_forever), alive(echo_job)) == (False, True, True)


def test_zero_days_keeps_a_status_for_good(settings):
    settings.SENTINELFLOW_RETENTION_DAYS = {**settings.SENTINELFLOW_RETENTION_DAYS, "succeeded": 0}
    job = aged(S.SUCCEEDED, 1000)
    assert services.jobs_prune().total == 0
    assert alive(job)


def test_batches_are_bounded_and_the_limit_holds():
    for _ in range(7):
        aged(S.SUCCEEDED, 8)
    calls = []
    report = services.jobs_prune(batch_size=2, limit=5, between_batches=lambda: calls.append(1))
    assert report.total == 5 and report.batches == 3
    assert Job.objects.count() == 2
    assert services.jobs_prune(batch_size=2).total == 2


def test_a_retried_job_is_no_longer_prunable():
    job = aged(S.FAILED, 40)
    services.job_retry(job=job, actor="test")
    assert services.jobs_prune().total == 0
    assert Job.objects.get(pk=job.pk).status == S.QUEUED


def test_a_schedules_last_job_may_go_and_the_schedule_stays():
    job = aged(S.SUCCEEDED, 8)
    schedule = Schedule.objects.create(name="nightly", type="echo", interval=60, last_job=job)
    services.jobs_prune()
    schedule.refresh_from_db()
    assert schedule.last_job is None


@pytest.mark.parametrize("child_status", [S.WAITING, S.QUEUED, S.STARTED, S.RETRYING])
def test_a_parent_that_an_unfinished_dependent_needs_is_kept(child_status):
    parent, lone = aged(S.SUCCEEDED, 10), aged(S.SUCCEEDED, 10)
    child = make_job(status=child_status)
    JobDependency.objects.create(parent=parent, child=child)
    assert services.jobs_prune().total == 1
    assert alive(parent) and not alive(lone)
    Job.objects.filter(pk=child.pk).update(status=S.SUCCEEDED, finished_at=services.now())
    assert services.jobs_prune().total == 1  # its dependent finished: the parent may go now
    assert not alive(parent) and alive(child)


def test_selector_is_the_one_place_that_decides():
    old = aged(S.SUCCEEDED, 8)
    aged(S.SUCCEEDED, 1)
    assert list(services.prunable_jobs(now=services.now())) == [old]


def test_dry_run_counts_per_status_and_deletes_nothing():
    aged(S.SUCCEEDED, 8), aged(S.SUCCEEDED, 9), aged(S.FAILED, 31), aged(S.SUCCEEDED, 1)
    out = io.StringIO()
    call_command("prune_jobs", "--dry-run", stdout=out)
    assert "succeeded: 2" in out.getvalue() and "failed: 1" in out.getvalue()
    assert "would delete 3 finished jobs" in out.getvalue()
    assert Job.objects.count() == 4


def test_command_deletes_and_says_so():
    aged(S.SUCCEEDED, 8), aged(S.CANCELLED, 31), aged(S.SUCCEEDED, 1)
    out = io.StringIO()
    call_command("prune_jobs", "--batch-size", "1", stdout=out)
    assert "deleted 2 finished jobs (cancelled 1, succeeded 1) and 4 timeline rows in 2 batches" in out.getvalue()
    assert Job.objects.count() == 1


def test_command_refuses_a_zero_batch():
    with pytest.raises(CommandError):
        call_command("prune_jobs", "--batch-size", "0")


def test_sentinel_pass_prunes_within_its_limit_and_counts_it(settings, metric):
    settings.SENTINELFLOW_RETENTION_PER_PASS = 3
    settings.SENTINELFLOW_RETENTION_BATCH_SIZE = 2
    for _ in range(4):
        aged(S.SUCCEEDED, 8)
    aged(S.FAILED, 31, type="fail")
    report = Sentinel(sleep=lambda seconds: None).run_pass()
    assert report is not None and report.pruned == 3
    assert Job.objects.count() == 2
    report = Sentinel(sleep=lambda seconds: None).run_pass()
    assert report is not None and report.pruned == 2
    assert metric("jobs_pruned_total", type="echo", status="succeeded") == 4
    assert metric("jobs_pruned_total", type="fail", status="failed") == 1


def test_sentinel_does_not_prune_when_the_per_pass_limit_is_zero(settings):
    settings.SENTINELFLOW_RETENTION_PER_PASS = 0
    aged(S.SUCCEEDED, 8)
    Sentinel(sleep=lambda seconds: None).run_pass()
    assert Job.objects.count() == 1


# --------------------------------------------------------------------------- results


def test_a_result_larger_than_the_limit_is_stored_as_a_marker(settings, submit, run_worker):
    settings.SENTINELFLOW_MAX_RESULT_BYTES = 200
    big = submit({"type": "echo", "payload": {"text": "x" * 1000}})
    small = submit({"type": "echo", "payload": {"n": 1}})
    run_worker()
    stored = Job.objects.get(job_id=big["job_id"]).result
    assert stored["truncated"] is True and stored["limit_bytes"] == 200 and stored["size_bytes"] > 1000
    assert len(stored["preview"]) <= 200
    assert Job.objects.get(job_id=small["job_id"]).result == {"n": 1}


def test_the_per_job_path_bounds_results_too(settings):
    settings.SENTINELFLOW_MAX_RESULT_BYTES = 100
    job = make_job(status=S.QUEUED)
    started = services.job_start(job_id=str(job.job_id))
    assert started is not None
    services.job_succeed(job=started, result={"rows": list(range(1000))})
    assert Job.objects.get(pk=job.pk).result["truncated"] is True
