"""Schedules: the API, the ticks the sentinel submits (one job each, whoever runs them), daylight saving."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Job, Schedule
from jobs.sentinel import Sentinel
from jobs.services import schedules, transitions
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """The services' clock, moved by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: datetime) -> None:
        self.now = start
        monkeypatch.setattr(transitions, "now", lambda: self.now)

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch, T0)


def key_client(scope: str) -> APIClient:
    _, full = services.api_key_create(name=f"key-{scope}", scope=scope)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=full)
    return client


def body(**fields):
    return {"name": "nightly", "type": "echo", "payload": {"message": "hi"}, "cron": "30 2 * * *", **fields}


# ----------------------------------------------------------------------------- API


def test_create_shows_the_schedule_with_its_next_tick(api, clock):
    response = api.post("/schedules", body(timezone="Europe/Berlin"), format="json")

    assert response.status_code == 201, response.content
    data = response.json()
    assert data["name"] == "nightly"
    assert data["cron"] == "30 2 * * *" and data["interval"] is None
    assert data["misfire"] == "run_once" and data["enabled"] is True
    # 02:30 in Berlin (CET, +01:00) on the next day is 01:30 UTC.
    assert data["next_run_at"] == "2026-03-02T01:30:00Z"
    assert data["last_run_at"] is None and data["last_job"] is None
    assert api.get("/schedules/nightly").json()["next_run_at"] == "2026-03-02T01:30:00Z"
    assert [s["name"] for s in api.get("/schedules").json()] == ["nightly"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * * * *"}, "cron"),
        ({"cron": "every day"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),  # valid, but February has no 31st: it would never fire
        ({"cron": "@daily"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"interval": 5}, "interval"),  # both cron and interval
        ({"cron": None}, "cron"),  # neither
        ({"cron": None, "interval": 0}, "interval"),
        ({"type": "no-such-type"}, "type"),
        ({"type": "sleep", "payload": {"seconds": "long"}}, "payload"),
        ({"queue": "nowhere"}, "queue"),
        ({"misfire": "sometimes"}, "misfire"),
        ({"name": "../../admin"}, "name"),
        ({"name": "<script>alert(1)</script>"}, "name"),
        ({"name": "a" * 65}, "name"),
        ({"name": ""}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_schedule_is_a_400_naming_the_field_and_nothing_is_stored(api, fields, field):
    response = api.post("/schedules", body(**fields), format="json")

    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not Schedule.objects.exists()


def test_a_duplicate_name_is_a_400_naming_the_field(api):
    assert api.post("/schedules", body(), format="json").status_code == 201

    response = api.post("/schedules", body(cron="0 * * * *"), format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    assert Schedule.objects.get().cron == "30 2 * * *"


def test_a_hostile_name_in_the_url_is_not_found(api):
    api.post("/schedules", body(), format="json")

    for path in ["/schedules/..%2F..%2Fadmin", "/schedules/nightly%3Cscript%3E", "/schedules/" + "a" * 200]:
        assert api.get(path).status_code == 404, path
        assert api.delete(path).status_code == 404, path
    assert Schedule.objects.count() == 1


def test_patch_checks_the_schedule_it_would_make(api, clock):
    api.post("/schedules", body(), format="json")

    both = api.patch("/schedules/nightly", {"interval": 60}, format="json")
    assert both.status_code == 400 and "interval" in both.json()

    switched = api.patch("/schedules/nightly", {"cron": None, "interval": 60}, format="json")
    assert switched.status_code == 200, switched.content
    assert switched.json()["cron"] is None
    assert switched.json()["next_run_at"] == "2026-03-01T12:01:00Z"

    renamed = api.patch("/schedules/nightly", {"name": "other"}, format="json")
    assert renamed.status_code == 400 and "name" in renamed.json()

    paused = api.patch("/schedules/nightly", {"enabled": False}, format="json")
    assert paused.json()["next_run_at"] is None


def test_delete_removes_the_schedule_and_keeps_its_jobs(api, clock):
    api.post("/schedules", body(), format="json")
    job = api.post("/schedules/nightly/trigger").json()

    assert api.delete("/schedules/nightly").status_code == 204
    assert not Schedule.objects.exists()
    assert Job.objects.get(job_id=job["job_id"]).schedule == "nightly"


def test_trigger_submits_the_job_now_even_while_disabled(api, clock):
    api.post("/schedules", body(enabled=False, payload={"message": "now"}), format="json")

    response = api.post("/schedules/nightly/trigger")

    assert response.status_code == 202, response.content
    job = response.json()
    assert job["schedule"] == "nightly" and job["payload"] == {"message": "now"}
    assert job["run_at"] == "2026-03-01T12:00:00Z" and job["status"] == "queued"
    shown = api.get("/schedules/nightly").json()
    assert shown["last_job"] == job["job_id"] and shown["next_run_at"] is None
    listed = api.get("/jobs", {"schedule": "nightly"}).json()["results"]
    assert [j["job_id"] for j in listed] == [job["job_id"]]
    assert api.get("/jobs", {"schedule": "other"}).json()["results"] == []


def test_admin_keys_write_and_read_keys_read(api):
    api.post("/schedules", body(), format="json")
    reader, writer, admin = key_client("read"), key_client("write"), key_client("admin")

    assert reader.get("/schedules").status_code == 200
    assert reader.get("/schedules/nightly").status_code == 200
    for client in (reader, writer):
        assert client.post("/schedules", body(name="other"), format="json").status_code == 403
        assert client.patch("/schedules/nightly", {"enabled": False}, format="json").status_code == 403
        assert client.post("/schedules/nightly/trigger").status_code == 403
        assert client.delete("/schedules/nightly").status_code == 403
    assert APIClient().get("/schedules").status_code in (401, 403)
    assert not Job.objects.exists() and Schedule.objects.get().enabled

    assert admin.post("/schedules", body(name="other"), format="json").status_code == 201
    assert admin.post("/schedules/other/trigger").status_code == 202
    assert admin.delete("/schedules/other").status_code == 204


# ----------------------------------------------------------------------------- ticks


def make_schedule(**fields) -> Schedule:
    defaults = {"name": "every-second", "type": "echo", "payload": {}, "interval": 1}
    return services.schedule_create(**{**defaults, **fields})


def test_each_tick_submits_one_job_with_the_tick_as_run_at(clock, metric):
    schedule = make_schedule()
    assert schedule.next_run_at == T0 + timedelta(seconds=1)

    clock.advance(seconds=3.5)
    assert services.schedules_fire_due() == 3
    assert services.schedules_fire_due() == 0

    jobs = list(Job.objects.order_by("run_at"))
    assert [job.run_at for job in jobs] == [T0 + timedelta(seconds=n) for n in (1, 2, 3)]
    assert {job.schedule for job in jobs} == {"every-second"}
    assert {job.submitted_by for job in jobs} == {"schedule:every-second"}
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(seconds=4)
    assert schedule.last_run_at == T0 + timedelta(seconds=3) and schedule.last_job == jobs[-1]
    assert metric("schedule_runs_total", schedule="every-second") == 3
    assert metric("schedule_lag_seconds_count", schedule="every-second") == 3
    # Lags of 2.5, 1.5 and 0.5 s.
    assert metric("schedule_lag_seconds_sum", schedule="every-second") == pytest.approx(4.5)


def test_a_stale_second_sentinel_cannot_submit_a_tick_again(clock):
    make_schedule()
    clock.advance(seconds=1)
    # Two sentinels read the same due schedule; both then try to fire its tick.
    first, second = Schedule.objects.get(), Schedule.objects.get()

    assert schedules.schedule_fire(first, now=clock.now) == 1
    assert schedules.schedule_fire(second, now=clock.now) == 0

    assert Job.objects.count() == 1


def test_a_pass_killed_mid_tick_leaves_nothing_and_the_next_pass_submits_the_tick_once(clock, monkeypatch):
    make_schedule()
    clock.advance(seconds=1)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between the compare-and-set and the job's insert")

    with monkeypatch.context() as patched:
        patched.setattr(schedules, "insert_jobs", killed)
        with pytest.raises(KeyboardInterrupt):
            services.schedules_fire_due()
    assert not Job.objects.exists()
    assert Schedule.objects.get().next_run_at == T0 + timedelta(seconds=1)

    assert services.schedules_fire_due() == 1
    assert services.schedules_fire_due() == 0
    assert Job.objects.get().run_at == T0 + timedelta(seconds=1)


@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite writes one transaction at a time")
def test_racing_sentinel_threads_submit_one_job_per_tick(clock):  # pragma: no cover - PostgreSQL only
    make_schedule()
    clock.advance(seconds=5)
    barrier = threading.Barrier(4)

    def fire() -> None:
        stale = Schedule.objects.get()
        barrier.wait()
        schedules.schedule_fire(stale, now=clock.now)
        connection.close()

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(Job.objects.values_list("run_at", flat=True)) == [T0 + timedelta(seconds=n) for n in range(1, 6)]


def test_two_sentinels_in_turn_submit_each_tick_once(clock):
    make_schedule()
    sentinels = [Sentinel(sleep=lambda seconds: True), Sentinel(sleep=lambda seconds: True)]
    for step in range(10):
        clock.advance(seconds=0.5)
        for sentinel in sentinels[step % 2 :] + sentinels[: step % 2]:
            sentinel.run_pass()

    assert sorted(Job.objects.values_list("run_at", flat=True)) == [T0 + timedelta(seconds=n) for n in range(1, 6)]


def test_missed_ticks_run_once(clock):
    make_schedule(interval=10)
    clock.advance(hours=1, seconds=5)

    submitted = services.schedules_fire_due()

    # One job for the missed hour (its latest tick before the grace period), then one for each tick
    # within MISFIRE_GRACE (60 s: six ticks), which a slow pass only delayed.
    cutoff = clock.now - schedules.MISFIRE_GRACE
    collapsed, *recent = Job.objects.order_by("run_at").values_list("run_at", flat=True)
    assert submitted == 7 and len(recent) == 6
    assert collapsed <= cutoff < collapsed + timedelta(seconds=10)
    assert all(run_at > cutoff for run_at in recent)
    assert Schedule.objects.get().next_run_at > clock.now


def test_missed_ticks_are_skipped_with_skip_but_recent_ones_run(clock):
    make_schedule(interval=10, misfire="skip")
    clock.advance(hours=1, seconds=5)

    submitted = services.schedules_fire_due()

    # No job for the missed hour; one for each tick in the last MISFIRE_GRACE (60 s: six ticks).
    run_ats = sorted(Job.objects.values_list("run_at", flat=True))
    assert submitted == len(run_ats) == 6
    assert all(run_at > clock.now - schedules.MISFIRE_GRACE for run_at in run_ats)


def test_a_disabled_schedule_submits_nothing_and_resumes_from_now(clock):
    schedule = make_schedule(interval=10)
    services.schedule_set_enabled(schedule, enabled=False)
    clock.advance(minutes=5)

    assert services.schedules_fire_due() == 0
    services.schedule_set_enabled(schedule, enabled=True)
    assert schedule.next_run_at == clock.now + timedelta(seconds=10)
    assert not Job.objects.exists()


# ----------------------------------------------------------------------------- daylight saving


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # Spring forward on 2026-03-29: 02:30 does not exist in Berlin; it fires once, at 03:00 CEST.
        (
            datetime(2026, 3, 27, 12, tzinfo=UTC),
            ["2026-03-28T01:30:00+00:00", "2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"],
        ),
        # Fall back on 2026-10-25: 02:30 happens twice in Berlin; it fires once, at the first (CEST).
        (
            datetime(2026, 10, 23, 12, tzinfo=UTC),
            ["2026-10-24T00:30:00+00:00", "2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"],
        ),
    ],
)
def test_a_cron_schedule_across_daylight_saving_neither_skips_nor_doubles(monkeypatch, start, expected):
    clock = Clock(monkeypatch, start)
    make_schedule(name="berlin", interval=None, cron="30 2 * * *", timezone="Europe/Berlin")

    # A pass every 10 minutes for three days.
    for _ in range(3 * 24 * 6):
        clock.advance(minutes=10)
        services.schedules_fire_due()

    run_ats = [run_at.isoformat() for run_at in Job.objects.order_by("run_at").values_list("run_at", flat=True)]
    assert run_ats == expected


def test_hourly_cron_in_the_repeated_hour_fires_once_per_wall_time():
    schedule = Schedule(name="hourly", cron="30 * * * *", timezone="Europe/Berlin")

    ticks = schedules.upcoming_ticks(schedule, count=4, after=datetime(2026, 10, 24, 23, 0, tzinfo=UTC))

    # 01:30 CEST, 02:30 CEST, (02:30 CET repeats a wall time: not again), 03:30 CET, 04:30 CET.
    assert [tick.isoformat() for tick in ticks] == [
        "2026-10-24T23:30:00+00:00",
        "2026-10-25T00:30:00+00:00",
        "2026-10-25T02:30:00+00:00",
        "2026-10-25T03:30:00+00:00",
    ]


def test_a_new_schedule_has_its_metric_series_before_it_fires(anon, clock):
    make_schedule(name="fresh")

    text = anon.get("/metrics").content.decode()

    assert 'schedule_runs_total{schedule="fresh"} 0.0' in text
    assert 'schedule_lag_seconds_count{schedule="fresh"} 0.0' in text


def test_a_tick_submits_the_payload_as_it_is_at_the_tick(clock):
    make_schedule(payload={"version": 1})
    clock.advance(seconds=1)
    read_by_a_pass = Schedule.objects.get()
    Schedule.objects.filter(pk=read_by_a_pass.pk).update(payload={"version": 2})

    assert schedules.schedule_fire(read_by_a_pass, now=clock.now) == 1

    assert Job.objects.get().payload == {"version": 2}


def test_sessions_need_the_schedule_permissions(anon):
    anon.force_login(make_user("viewer", "view_schedule", "view_job", "add_job"))
    assert anon.get("/schedules").status_code == 200
    assert anon.post("/schedules", body(), format="json").status_code == 403

    anon.force_login(make_user("scheduler", "add_schedule"))
    assert anon.get("/schedules").status_code == 403
    assert anon.post("/schedules", body(), format="json").status_code == 201
    assert anon.post("/schedules/nightly/trigger").status_code == 403
    assert not Job.objects.exists()
