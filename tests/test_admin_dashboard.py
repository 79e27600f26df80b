"""The admin dashboard (/admin/jobs/job/dashboard/): its figures from jobs with known times, as staff see them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from redis.exceptions import RedisError
from rq import Worker

from jobs import redis_store, selectors
from jobs.models import JobStatus
from tests.factories import make_job, make_user

pytestmark = pytest.mark.django_db(transaction=True)

DASHBOARD = "/admin/jobs/job/dashboard/"
# The clock of the whole test: the dashboard's hour runs from 11:00:30 to 12:00:30, its minutes from 11:01.
NOW = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def frozen_now(monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: NOW)


def finished(status: str, *, job_type: str = "echo", at: datetime, ran: float, **fields) -> None:
    make_job(
        type=job_type,
        status=status,
        started_at=at - timedelta(seconds=ran),
        finished_at=at,
        attempts=1,
        **fields,
    )


@pytest.fixture
def history(frozen_now):
    """Twenty echo runs of 1..20 s and three fail runs, in two minutes of the last hour, and older runs."""
    for seconds in range(1, 21):
        finished(JobStatus.SUCCEEDED, at=datetime(2030, 1, 1, 11, 58, 10, tzinfo=UTC), ran=seconds)
    for index, seconds in enumerate([2.0, 3.0, 4.0]):
        finished(
            JobStatus.FAILED,
            job_type="fail",
            at=datetime(2030, 1, 1, 11, 59, 10 + index, tzinfo=UTC),
            ran=seconds,
            error=f"ValueError: boom {index}",
        )
    # Before the hour: neither counted per minute nor in the p95s, but still among the latest failures.
    finished(JobStatus.SUCCEEDED, at=NOW - timedelta(minutes=61), ran=500)
    finished(JobStatus.FAILED, job_type="fail", at=NOW - timedelta(minutes=90), ran=500, error="old")
    # Not finished: counted nowhere but in the queues.
    make_job(status=JobStatus.QUEUED)


def test_throughput_per_minute_covers_the_hour_with_zeros(history):
    figures = selectors.dashboard_figures()

    series = figures["per_minute"]
    assert len(series) == 60
    assert series[0]["minute"] == datetime(2030, 1, 1, 11, 1, tzinfo=UTC)
    assert series[-1]["minute"] == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    by_minute = {point["minute"]: (point["succeeded"], point["failed"]) for point in series}
    assert by_minute[datetime(2030, 1, 1, 11, 58, tzinfo=UTC)] == (20, 0)
    assert by_minute[datetime(2030, 1, 1, 11, 59, tzinfo=UTC)] == (0, 3)
    assert sum(s + f for s, f in by_minute.values()) == 23  # every other minute at zero
    assert (figures["finished_last_hour"], figures["failed_last_hour"], figures["peak_per_minute"]) == (23, 3, 20)
    # The chart's bars: the peak minute is full height (110 of 120 units), an empty one flat.
    peak = by_minute_point(series, datetime(2030, 1, 1, 11, 58, tzinfo=UTC))
    assert (peak["ok_h"], peak["ok_y"], peak["bad_h"], peak["bad_y"]) == (110.0, 5.0, 0.0, 115.0)
    failed = by_minute_point(series, datetime(2030, 1, 1, 11, 59, tzinfo=UTC))
    assert failed["bad_h"] == round(110 * 3 / 20, 1)


def by_minute_point(series: list[dict], minute: datetime) -> dict:
    return next(point for point in series if point["minute"] == minute)


def test_p95_run_time_is_per_type_over_the_hour(history):
    figures = selectors.dashboard_figures()

    # 20 runs of 1..20 s: the 95th percentile is the 19th (ceil(0.95 * 20) = 19); the older 500 s run is out.
    assert figures["p95_by_type"] == [
        {"type": "echo", "p95": 19.0, "runs": 20},
        {"type": "fail", "p95": 4.0, "runs": 3},
    ]


def test_latest_failures_are_newest_first_whatever_their_age(history):
    figures = selectors.dashboard_figures()

    assert [job.error for job in figures["recent_failures"]] == [
        "ValueError: boom 2",
        "ValueError: boom 1",
        "ValueError: boom 0",
        "old",
    ]


def test_latest_failures_stop_at_ten(frozen_now):
    for minute in range(12):
        finished(JobStatus.FAILED, at=NOW - timedelta(minutes=minute), ran=1, error=f"e{minute}")

    assert [job.error for job in selectors.dashboard_figures()["recent_failures"]] == [f"e{m}" for m in range(10)]


def test_queue_depths_and_workers_come_from_redis(submit, frozen_now):
    for queue in ["default", "default", "high"]:
        submit({"type": "echo", "queue": queue})
    Worker([redis_store.queue("low")], connection=redis_store.connection(), name="dash-worker").register_birth()

    figures = selectors.dashboard_figures()

    assert figures["queues"] == [
        {"name": "high", "depth": 1},
        {"name": "default", "depth": 2},
        {"name": "low", "depth": 0},
    ]
    assert [(worker["name"], worker["queues"]) for worker in figures["workers"]] == [("dash-worker", "low")]


def test_queue_depths_say_unknown_when_redis_is_down(monkeypatch, frozen_now):
    def down():
        raise RedisError("down")

    monkeypatch.setattr(redis_store, "queues", down)
    monkeypatch.setattr(redis_store, "connection", down)

    figures = selectors.dashboard_figures()

    assert figures["queues"] == [{"name": name, "depth": None} for name in ["high", "default", "low"]]
    assert figures["workers"] == []


def test_staff_user_with_view_permission_sees_the_figures(client, history):
    client.force_login(make_user("watcher", "view_job"))

    response = client.get(DASHBOARD)

    assert response.status_code == 200
    figures = response.context["figures"]
    assert (figures["finished_last_hour"], figures["failed_last_hour"]) == (23, 3)
    page = response.content.decode()
    assert "peak 20 per minute · 23 finished, 3 failed in the last hour" in page
    assert "<td>echo</td><td>19.000 s</td><td>20</td>" in page
    assert "<td>fail</td><td>4.000 s</td><td>3</td>" in page
    assert "11:58: 20 succeeded, 0 failed" in page
    assert "ValueError: boom 2" in page


def test_dashboard_is_refused_to_anonymous_and_non_staff_users(client, history):
    assert client.get(DASHBOARD).status_code == 302  # to the login page

    client.force_login(make_user("visitor", staff=False))
    response = client.get(DASHBOARD)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
