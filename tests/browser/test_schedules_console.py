"""Schedules in a real browser: a bad expression refused on its field, the preview, save, run now, the jobs link."""

from __future__ import annotations

import pytest

from jobs.models import Job, Schedule

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_a_schedule_preview_it_run_it_now_and_follow_the_link_to_its_jobs(logged_in, live_server):
    page = logged_in
    page.goto(f"{live_server.url}/admin/jobs/schedule/add/")
    assert page.input_value("#id_queue") == "default"
    page.fill("#id_name", "nightly-report")
    page.select_option("#id_type", "echo")
    page.fill("#id_payload", '{"message": "report"}')
    page.fill("#id_cron", "61 2 * * *")
    page.fill("#id_timezone", "Europe/Berlin")
    page.click("input[name=_save]")
    assert "is not a 5-field cron expression" in page.inner_text(".field-cron")
    assert not Schedule.objects.exists()

    page.fill("#id_cron", "30 2 * * *")
    page.click("#sf-preview")
    preview = page.inner_text("ul.errorlist.nonfield")
    assert "The next five fire times would be" in preview and preview.count("UTC") == 5
    shot(page, "schedule-preview")
    assert not Schedule.objects.exists()

    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist")
    assert Schedule.objects.get().next_run_at is not None

    page.check("#result_list tbody input.action-select")
    page.select_option("select[name=action]", "run_now_selected")
    page.click("button[name=index]")
    assert "Submitted a job for 1 schedule(s)." in page.inner_text("ul.messagelist")

    page.click("#result_list a:has-text('jobs')")
    page.wait_for_url("**/admin/jobs/job/?schedule=nightly-report")
    job = Job.objects.get()
    assert job.schedule == "nightly-report"
    assert str(job.job_id)[:8] in page.inner_text("#result_list")
