"""Failure groups: the fingerprint stored when a job fails; GET /failures; the admin's groups and "retry this group"."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from jobs import services
from jobs.models import AuditEntry, Job, JobEvent, JobStatus
from tests.factories import PASSWORD, make_job, make_user

pytestmark = pytest.mark.django_db(transaction=True)
S = JobStatus
FAILURES_PAGE = "/admin/jobs/job/failures/"


# --------------------------------------------------------------------------- the fingerprint


@pytest.mark.parametrize(
    "first, second",
    [
        ("order 1832 timed out after 30.2 s", "order 77 timed out after 1.5 s"),
        ("no row 5c0e9a4e-1b2f-4c8e-9d3a-0f1e2d3c4b5a", "no row 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
        ("bad pointer 0x7f3a2b10 in deadbeef42", "bad pointer 0x1 in 0123456789abcdef"),
        ("user 'alice' not found", 'user "bob" not found'),
        ("a   b\n c", "a b c"),
    ],
)
def test_what_varies_between_failures_of_one_cause_is_left_out(first, second):
    assert services.error_fingerprint(RuntimeError(first)) == services.error_fingerprint(RuntimeError(second))


def test_another_class_or_another_message_is_another_group():
    base = services.error_fingerprint(RuntimeError("connection refused"))
    assert services.error_fingerprint(ValueError("connection refused")) != base
    assert services.error_fingerprint(RuntimeError("connection reset")) != base
    assert len(base) == 16 and int(base, 16) >= 0


def test_a_class_is_named_with_its_module():
    class Local(Exception):
        pass

    assert services.error_fingerprint(Local("x")) != services.error_fingerprint(Exception("x"))


# --------------------------------------------------------------------------- stored when a job fails


def fail_jobs(submit, run_worker, messages: list[str], *, retries: int = 0) -> list[str]:
    ids = [submit({"type": "fail", "payload": {"message": m}, "max_retries": retries})["job_id"] for m in messages]
    run_worker()
    return ids


def test_the_worker_stores_the_fingerprint_and_the_api_groups_by_it(api, submit, run_worker, store_backend):
    fail_jobs(submit, run_worker, ["order 1 timed out", "order 22 timed out", "order 333 timed out", "disk full"])
    groups = api.get("/failures").json()
    assert sorted((g["type"], g["count"]) for g in groups) == [("fail", 1), ("fail", 3)]
    timed_out = next(g for g in groups if g["count"] == 3)
    assert set(timed_out) >= {"type", "fingerprint", "count", "first_seen", "last_seen", "sample_error"}
    assert timed_out["sample_error"].startswith("jobs.handlers.fail.DrillFailure: order ")
    assert "Traceback" in timed_out["sample_traceback"]
    assert timed_out["first_seen"] <= timed_out["last_seen"]
    assert timed_out["fingerprint"] == services.fingerprint("jobs.handlers.fail.DrillFailure", "order 9 timed out")


def test_jobs_still_retrying_are_not_in_a_group(api, submit, settings):
    settings.SENTINELFLOW_RETRY_BACKOFF_BASE = 60  # the retry waits: the job stays `retrying`
    job_id = submit({"type": "fail", "payload": {"message": "boom"}, "max_retries": 2})["job_id"]
    job = services.job_start(job_id=job_id)
    assert job is not None
    services.job_fail_attempt(job=job, error=RuntimeError("boom 1"))
    assert Job.objects.get(job_id=job_id).status == S.RETRYING
    assert Job.objects.get(job_id=job_id).error_fingerprint
    assert api.get("/failures").json() == []


def test_a_lost_run_with_attempts_spent_has_a_fingerprint_too():
    job = make_job(status=S.STARTED, attempts=4, max_retries=3)
    services.job_recover(job=job, reason="no process holds its lease any more")
    stored = Job.objects.get(pk=job.pk)
    assert stored.status == S.FAILED
    assert stored.error_fingerprint == services.fingerprint("LostRun", "no process holds its lease any more")


def test_type_filter_and_limit(api):
    for job_type, message in [("fail", "a"), ("fail", "b"), ("webhook", "c")]:
        make_job(
            type=job_type,
            status=S.FAILED,
            error=f"RuntimeError: {message}",
            error_fingerprint=services.fingerprint("RuntimeError", message),
            finished_at=services.now(),
        )
    assert {g["type"] for g in api.get("/failures?type=webhook").json()} == {"webhook"}
    assert len(api.get("/failures?limit=2").json()) == 2
    assert api.get("/failures?limit=0").status_code == 400
    assert api.get("/failures?limit=abc").status_code == 400
    assert api.get("/failures?limit=").status_code == 400  # blank is not the default


def test_failures_need_the_read_scope(anon):
    make_job(status=S.FAILED, error="secret path /srv/app.py", error_fingerprint="0" * 16, finished_at=services.now())
    assert anon.get("/failures").status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_X_API_KEY="sf_nope_nope")
    assert bad.get("/failures").status_code == 401
    _key, full = services.api_key_create(name="reader", scope="read")
    reader = APIClient()
    reader.credentials(HTTP_X_API_KEY=full)
    assert reader.get("/failures").json()[0]["sample_traceback"] == "secret path /srv/app.py"


def test_failures_is_in_the_openapi_schema(anon):
    import yaml

    schema = yaml.safe_load(anon.get("/api/schema").content)
    operation = schema["paths"]["/failures/"]["get"]
    assert set(operation["responses"]) >= {"200", "400", "401", "403"}


def test_a_user_without_view_permission_gets_403():
    user = make_user("nobody", staff=True)
    client = APIClient()
    client.force_login(user)
    assert client.get("/failures").status_code == 403


# --------------------------------------------------------------------------- retry a group


def failed_group(count: int, message: str = "downstream 503", job_type: str = "fail") -> list[Job]:
    fp = services.fingerprint("RuntimeError", message)
    return [
        make_job(
            type=job_type,
            status=S.FAILED,
            error=f"Traceback...\nRuntimeError: {message}",
            error_fingerprint=fp,
            finished_at=services.now(),
            attempts=1,
        )
        for _ in range(count)
    ]


def test_retry_a_group_retries_only_its_failed_jobs():
    group = failed_group(3)
    other = failed_group(1, "another cause")[0]
    fingerprint = group[0].error_fingerprint
    assert services.failure_group_retry(job_type="fail", fingerprint=fingerprint, actor="admin:ops") == 3
    assert set(Job.objects.filter(pk__in=[j.pk for j in group]).values_list("status", flat=True)) == {S.QUEUED}
    assert Job.objects.get(pk=other.pk).status == S.FAILED
    assert JobEvent.objects.filter(job_id=group[0].pk, actor="admin:ops", to_status=S.QUEUED).exists()
    entry = AuditEntry.objects.get(action="jobs.retry_group")
    assert (entry.actor, entry.target, entry.detail) == (
        "admin:ops",
        "fail",
        {"type": "fail", "fingerprint": fingerprint, "changed": 3},
    )
    # A second retry of the same group finds nothing left to retry.
    assert services.failure_group_retry(job_type="fail", fingerprint=fingerprint, actor="admin:ops") == 0


def admin_client(*permissions: str) -> Client:
    user = make_user("ops", *permissions)
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_admin_lists_groups_with_counts_times_and_a_sample_traceback():
    failed_group(3)
    page = admin_client("view_job", "retry_job").get(FAILURES_PAGE)
    assert page.status_code == 200
    html = page.content.decode()
    assert "RuntimeError: downstream 503" in html and "Traceback..." in html
    assert "Retry this group (3)" in html
    assert "error_fingerprint=" in html  # the link to the group's jobs in the job list


def test_admin_retry_this_group_goes_through_the_retry_service_and_is_audited():
    group = failed_group(2)
    client = admin_client("view_job", "retry_job")
    response = client.post(FAILURES_PAGE, {"type": "fail", "fingerprint": group[0].error_fingerprint})
    assert response.status_code == 302
    assert set(Job.objects.values_list("status", flat=True)) == {S.QUEUED}
    assert JobEvent.objects.filter(actor="admin:ops", to_status=S.QUEUED).count() == 2
    # The job list link of a group filters by its fingerprint (an allowed lookup).
    listing = client.get(f"/admin/jobs/job/?error_fingerprint={group[0].error_fingerprint}")
    assert listing.status_code == 200


def test_admin_retry_needs_the_retry_permission():
    group = failed_group(2)
    client = admin_client("view_job")
    assert "Retry this group" not in client.get(FAILURES_PAGE).content.decode()
    response = client.post(FAILURES_PAGE, {"type": "fail", "fingerprint": group[0].error_fingerprint})
    assert response.status_code == 403
    assert set(Job.objects.values_list("status", flat=True)) == {S.FAILED}


def test_admin_groups_need_the_view_permission():
    failed_group(1)
    assert admin_client().get(FAILURES_PAGE).status_code == 403
