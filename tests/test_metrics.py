"""GET /metrics: the job counters move exactly as the transitions happen."""

from __future__ import annotations

import pytest

from jobs import metrics

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_family_is_exposed_from_the_start(anon):
    text = anon.get("/metrics").content.decode()

    for name in [*metrics.COUNTERS, *metrics.HISTOGRAMS, "jobs_queue_depth", "jobs_workers"]:
        assert f"# TYPE {name} " in text, name
    assert 'jobs_submitted_total{type="echo"} 0.0' in text
    assert "django_http_requests_before_middlewares_total" in text  # django-prometheus' own metrics


def test_submit_counts_submitted_and_enqueued(submit, metric):
    submit({"type": "echo", "queue": "high"})
    submit({"type": "echo", "queue": "high"})

    assert metric("jobs_submitted_total", type="echo") == 2
    assert metric("jobs_enqueued_total", type="echo", queue="high") == 2
    assert metric("jobs_queue_depth", queue="high") == 2
    assert metric("jobs_started_total", type="echo") == 0


def test_run_counts_started_succeeded_and_histograms(submit, run_worker, metric):
    submit({"type": "echo"})
    run_worker()

    assert metric("jobs_started_total", type="echo") == 1
    assert metric("jobs_succeeded_total", type="echo") == 1
    assert metric("job_duration_seconds_count", type="echo") == 1
    assert metric("job_wait_seconds_count", type="echo") == 1
    assert metric("job_duration_seconds_bucket", type="echo", le="+Inf") == 1
    assert metric("jobs_queue_depth", queue="default") == 0


def test_auto_retries_and_failure_are_counted(submit, run_worker, metric, no_backoff):
    submit({"type": "fail", "max_retries": 2})
    run_worker()

    assert metric("jobs_started_total", type="fail") == 3
    assert metric("jobs_retried_total", type="fail", reason="auto") == 2
    assert metric("jobs_failed_total", type="fail") == 1
    assert metric("jobs_enqueued_total", type="fail", queue="default") == 3
    assert metric("jobs_succeeded_total", type="fail") == 0


def test_manual_retry_and_cancel_are_counted(api, submit, metric):
    job = submit({"type": "echo"})
    api.post(f"/jobs/{job['job_id']}/cancel")
    api.post(f"/jobs/{job['job_id']}/retry")

    assert metric("jobs_cancelled_total", type="echo") == 1
    assert metric("jobs_retried_total", type="echo", reason="manual") == 1
    assert metric("jobs_enqueued_total", type="echo", queue="default") == 2
    assert metric("jobs_submitted_total", type="echo") == 1


def test_refused_submission_counts_nothing(api, metric):
    api.post("/jobs", {"type": "echo", "queue": "nope"}, format="json")

    assert metric("jobs_submitted_total", type="echo") == 0
    assert metric("jobs_enqueued_total", type="echo", queue="default") == 0
