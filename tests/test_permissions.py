"""Session access to the API and the admin's actions follow Django's permissions, not the staff flag."""

from __future__ import annotations

import pytest

from jobs.models import Job, JobStatus
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued_job(submit) -> str:
    return submit({"type": "echo", "payload": {}})["job_id"]


@pytest.fixture
def cancelled_job(api, submit) -> str:
    job_id = submit({"type": "echo", "payload": {}})["job_id"]
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 202
    return job_id


def test_staff_without_permissions_cannot_write_through_the_api(anon, queued_job, cancelled_job):
    anon.force_login(make_user("bare"))

    assert anon.post("/jobs", {"type": "echo"}, format="json").status_code == 403
    assert anon.post("/jobs/batch", {"jobs": [{"type": "echo"}]}, format="json").status_code == 403
    assert anon.post(f"/jobs/{queued_job}/cancel").status_code == 403
    assert anon.post(f"/jobs/{cancelled_job}/retry").status_code == 403
    assert Job.objects.count() == 2
    assert Job.objects.get(job_id=queued_job).status == JobStatus.QUEUED


def test_view_only_staff_cannot_write_through_the_api(anon, queued_job):
    anon.force_login(make_user("viewer", "view_job"))

    assert anon.post("/jobs", {"type": "echo"}, format="json").status_code == 403
    assert anon.post(f"/jobs/{queued_job}/cancel").status_code == 403
    assert anon.get(f"/jobs/{queued_job}").status_code == 200


def test_each_write_needs_its_own_permission(anon, queued_job, cancelled_job):
    anon.force_login(make_user("canceller", "cancel_job"))
    assert anon.post(f"/jobs/{cancelled_job}/retry").status_code == 403
    assert anon.post("/jobs", {"type": "echo"}, format="json").status_code == 403
    assert anon.post(f"/jobs/{queued_job}/cancel").status_code == 202

    anon.force_login(make_user("retrier", "retry_job"))
    assert anon.post(f"/jobs/{cancelled_job}/retry").status_code == 202

    anon.force_login(make_user("submitter", "add_job"))
    assert anon.post("/jobs", {"type": "echo"}, format="json").status_code == 201


def test_reads_that_require_a_key_accept_a_user_with_view_permission(anon, queued_job, settings):
    settings.SENTINELFLOW_READS_REQUIRE_KEY = True

    anon.force_login(make_user("bare"))
    assert anon.get(f"/jobs/{queued_job}").status_code == 403
    anon.force_login(make_user("viewer", "view_job"))
    assert anon.get(f"/jobs/{queued_job}").status_code == 200


def run_admin_action(client, action: str, job_id: str):
    pk = Job.objects.get(job_id=job_id).pk
    return client.post("/admin/jobs/job/", {"action": action, "_selected_action": [pk]})


def test_view_only_staff_cannot_run_the_admin_retry_and_cancel_actions(client, queued_job, cancelled_job):
    client.force_login(make_user("viewer", "view_job"))

    changelist = client.get("/admin/jobs/job/")
    assert changelist.status_code == 200
    assert b"retry_selected" not in changelist.content and b"cancel_selected" not in changelist.content
    run_admin_action(client, "cancel_selected", queued_job)
    run_admin_action(client, "retry_selected", cancelled_job)

    assert Job.objects.get(job_id=queued_job).status == JobStatus.QUEUED
    assert Job.objects.get(job_id=cancelled_job).status == JobStatus.CANCELLED


def test_admin_actions_run_for_staff_with_their_permissions(client, queued_job, cancelled_job):
    client.force_login(make_user("operator", "view_job", "retry_job", "cancel_job"))

    run_admin_action(client, "cancel_selected", queued_job)
    run_admin_action(client, "retry_selected", cancelled_job)

    assert Job.objects.get(job_id=queued_job).status == JobStatus.CANCELLED
    assert Job.objects.get(job_id=cancelled_job).status != JobStatus.CANCELLED
