"""Schedules in the admin: the form's errors, the preview of fire times, pause/resume, run now, the jobs link."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobs import services
from jobs.models import Job, Schedule
from jobs.services import transitions
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
ADD_URL = "/admin/jobs/schedule/add/"
LIST_URL = "/admin/jobs/schedule/"


@pytest.fixture(autouse=True)
def frozen_now(monkeypatch):
    monkeypatch.setattr(transitions, "now", lambda: NOW)


@pytest.fixture
def operator(client):
    client.force_login(make_user("op", "view_schedule", "add_schedule", "change_schedule", "view_job"))
    return client


def form(**fields):
    return {
        "name": "nightly",
        "type": "echo",
        "payload": '{"message": "hi"}',
        "queue": "default",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "interval": "",
        "enabled": "on",
        "misfire": "run_once",
        **fields,
    }


def test_create_stores_the_schedule_planned(operator):
    response = operator.post(ADD_URL, form())

    assert response.status_code == 302, response.content.decode()[:2000]
    schedule = Schedule.objects.get()
    assert schedule.next_run_at == datetime(2026, 3, 28, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "99 * * * *"}, "is not a 5-field cron expression"),
        ({"timezone": "Nowhere/Land"}, "Unknown time zone"),
        ({"interval": "5"}, "Give cron or interval, not both"),
        ({"cron": ""}, "Give a cron expression or an interval"),
        ({"name": "bad name!"}, "letters, digits, hyphens and underscores"),
        ({"type": "sleep", "payload": '{"seconds": "long"}'}, "A valid number is required"),
    ],
)
def test_a_bad_schedule_is_refused_with_a_clear_error_on_the_form(operator, fields, message):
    response = operator.post(ADD_URL, form(**fields))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Schedule.objects.exists()


def test_preview_shows_the_next_five_fire_times_and_saves_nothing(operator):
    response = operator.post(ADD_URL, form(_preview="1"))

    page = response.content.decode()
    assert response.status_code == 200
    assert "Not saved. The next five fire times would be" in page
    # 02:30 Berlin: CET on the 28th, the spring-forward day (03:00 CEST), then CEST.
    for tick in ["2026-03-28 01:30:00", "2026-03-29 01:00:00", "2026-03-30 00:30:00", "2026-04-01 00:30:00"]:
        assert tick in page
    assert not Schedule.objects.exists()


def test_the_change_form_shows_the_next_five_fire_times_and_a_link_to_the_jobs(operator):
    schedule = services.schedule_create(name="every-minute", type="echo", payload={}, interval=60)

    page = operator.get(f"/admin/jobs/schedule/{schedule.pk}/change/").content.decode()

    assert "2026-03-27 12:01:00 UTC" in page and "2026-03-27 12:05:00 UTC" in page
    assert "/admin/jobs/job/?schedule=every-minute" in page
    assert 'id="sf-preview"' in page


def test_pause_resume_and_run_now_actions(operator):
    schedule = services.schedule_create(name="every-minute", type="echo", payload={}, interval=60)

    def act(action: str):
        return operator.post(LIST_URL, {"action": action, "_selected_action": [schedule.pk]})

    assert act("pause_selected").status_code == 302
    schedule.refresh_from_db()
    assert not schedule.enabled and schedule.next_run_at is None

    assert act("run_now_selected").status_code == 302
    job = Job.objects.get()
    assert job.schedule == "every-minute" and job.submitted_by == "admin:op"

    assert act("resume_selected").status_code == 302
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.next_run_at == datetime(2026, 3, 27, 12, 1, tzinfo=UTC)

    jobs_page = operator.get("/admin/jobs/job/?schedule=every-minute")
    assert jobs_page.status_code == 200 and str(job.job_id)[:8] in jobs_page.content.decode()


def test_a_view_only_user_cannot_run_the_actions(client):
    client.force_login(make_user("viewer", "view_schedule"))
    schedule = services.schedule_create(name="every-minute", type="echo", payload={}, interval=60)

    client.post(LIST_URL, {"action": "run_now_selected", "_selected_action": [schedule.pk]})
    client.post(LIST_URL, {"action": "pause_selected", "_selected_action": [schedule.pk]})

    assert not Job.objects.exists()
    assert Schedule.objects.get().enabled


def test_the_list_links_each_schedule_to_its_jobs_with_a_safe_name(operator):
    services.schedule_create(name="a-b_c", type="echo", payload={}, interval=60)

    page = operator.get(LIST_URL).content.decode()

    assert "/admin/jobs/job/?schedule=a-b_c" in page
