"""The operator console in a real browser: dashboard, job admin, API keys, browsable API, Swagger UI."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from jobs.handlers import REGISTRY, JobContext, job_type
from jobs.handlers.echo import EchoPayload
from jobs.models import Job, JobStatus

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)


def test_dashboard_shows_queue_depth_matching_the_jobs_submitted(logged_in, live_server, submit):
    for queue in ["high", "high", "default", "low", "low", "low"]:
        submit({"type": "echo", "queue": queue})
    page = logged_in

    page.click("text=Job dashboard")

    page.wait_for_selector("#sf-queues")
    depths = {cell.get_attribute("data-queue"): cell.inner_text() for cell in page.query_selector_all(".sf-depth")}
    assert depths == {"high": "2", "default": "1", "low": "3"}
    assert page.query_selector("#sf-throughput svg") is not None
    shot(page, "dashboard")


def test_dashboard_charts_finished_jobs_and_links_recent_failures(
    logged_in, live_server, submit, run_worker, no_backoff
):
    submit({"type": "echo"})
    failed = submit({"type": "fail", "max_retries": 0, "payload": {"message": "disk full"}})
    run_worker()
    page = logged_in

    page.goto(f"{live_server.url}/admin/jobs/job/dashboard/")

    assert "2 finished, 1 failed in the last hour" in page.inner_text("#sf-throughput")
    assert page.locator("#sf-throughput rect.sf-bad[height='110.0']").count() == 1
    page.click(f"#sf-failures a:has-text('{failed['job_id'][:8]}')")
    page.wait_for_selector("text=disk full")
    assert failed["job_id"] in page.content()
    shot(page, "dashboard-with-history")


@pytest.fixture
def flaky_type():
    """A job type that fails on its first attempt and succeeds on the next ones."""

    @job_type("flaky", payload_serializer=EchoPayload)
    def flaky(payload: dict, context: JobContext) -> dict:
        if context.attempt == 1:
            raise RuntimeError("first attempt always fails")
        return {"attempt": context.attempt}

    yield
    REGISTRY.pop("flaky")


def test_filter_failed_jobs_retry_one_with_the_admin_action_and_see_it_succeed(
    logged_in, live_server, submit, run_worker, flaky_type
):
    job = submit({"type": "flaky", "max_retries": 0})
    submit({"type": "echo"})
    run_worker()
    page = logged_in

    page.goto(f"{live_server.url}/admin/jobs/job/")
    page.click("#changelist-filter a:has-text('failed')")
    page.wait_for_url("**status__exact=failed")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert job["job_id"][:8] in rows.first.inner_text()
    page.check("#result_list tbody input.action-select")
    page.select_option("select[name=action]", "retry_selected")
    page.click("button[name=index]")
    assert "Retried 1 job(s)." in page.inner_text("ul.messagelist")

    run_worker()
    page.goto(f"{live_server.url}/admin/jobs/job/?q={job['job_id']}")
    assert "succeeded" in page.inner_text("#result_list")
    page.click(f"#result_list a:has-text('{job['job_id'][:8]}')")
    timeline = page.inner_text(".sf-timeline")
    assert "admin:operator" in timeline
    assert re.search(r"failed\s+queued\s+admin:operator", timeline)
    assert Job.objects.get(job_id=job["job_id"]).status == JobStatus.SUCCEEDED
    shot(page, "job-detail-timeline")


def test_cancel_action_reports_what_it_refused(logged_in, live_server, submit, run_worker):
    done = submit({"type": "echo"})
    run_worker()
    waiting = submit({"type": "echo"})
    page = logged_in

    page.goto(f"{live_server.url}/admin/jobs/job/")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "cancel_selected")
    page.click("button[name=index]")

    messages = page.inner_text("ul.messagelist")
    assert "Cancelled 1 job(s)." in messages
    assert f"Refused 1: {done['job_id'][:8]}" in messages
    assert Job.objects.get(job_id=waiting["job_id"]).status == JobStatus.CANCELLED


def test_create_an_api_key_in_the_admin_use_it_then_revoke_it(logged_in, live_server):
    page = logged_in
    page.goto(f"{live_server.url}/admin/jobs/apikey/add/")
    page.fill("#id_name", "ci-pipeline")
    page.select_option("#id_scope", "write")
    page.click("input[name=_save]")

    key = page.inner_text("#sf-new-key")
    assert key.startswith("sf_")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    assert client.post("/jobs", {"type": "echo"}, format="json").status_code == 201

    page.check("#result_list tbody input.action-select")
    page.select_option("select[name=action]", "revoke_selected")
    page.click("button[name=index]")
    assert "Revoked 1 key(s)." in page.inner_text("ul.messagelist")
    assert client.post("/jobs", {"type": "echo"}, format="json").status_code == 401
    shot(page, "api-keys")


def test_swagger_ui_shows_the_endpoints(page, live_server):
    page.goto(f"{live_server.url}/api/docs")

    page.wait_for_selector(".opblock")
    text = page.inner_text("#swagger-ui")
    for path in ["/jobs/", "/jobs/{job_id}/", "/jobs/{job_id}/retry/", "/jobs/{job_id}/cancel/", "/readyz/"]:
        assert path in text
    assert page.locator("button.authorize").count() == 1  # the X-API-Key scheme


def test_browsable_api_has_a_login_link_and_works_with_a_staff_session(logged_in, live_server):
    page = logged_in
    page.goto(f"{live_server.url}/jobs")
    page.wait_for_selector("#content")

    page.fill("textarea[name=_content]", '{"type": "echo", "payload": {"from": "browser"}}')
    page.locator("form button:has-text('POST')").last.click()

    page.wait_for_selector("text=HTTP 201 Created")
    assert Job.objects.get().submitted_by == "user:operator"
    page.context.clear_cookies()  # signed out
    page.goto(f"{live_server.url}/jobs")
    assert page.locator("a:has-text('Log in')").count() >= 1


def test_search_by_tag_and_cancel_all_matching_jobs_across_pages(logged_in, live_server, api):
    bulk = api.post(
        "/jobs/batch", {"jobs": [{"type": "echo", "tags": ["bulk"], "delay": 3600} for _ in range(60)]}, format="json"
    )
    assert bulk.status_code == 201
    other = api.post("/jobs", {"type": "echo", "tags": ["keep"], "delay": 3600}, format="json").json()
    page = logged_in

    page.goto(f"{live_server.url}/admin/jobs/job/?q=tag%3Abulk")
    assert page.locator("#result_list tbody tr").count() == 50  # one page of the 60
    page.check("#action-toggle")
    page.click(".actions .question a")  # Django's "Select all 60 jobs"
    assert "All 60 selected" in page.inner_text(".actions")
    page.select_option("select[name=action]", "cancel_selected")
    page.click("button[name=index]")

    assert "Cancelled 60 job(s)." in page.inner_text("ul.messagelist")
    assert Job.objects.filter(status=JobStatus.CANCELLED).count() == 60
    assert Job.objects.get(job_id=other["job_id"]).status == JobStatus.SCHEDULED
    shot(page, "bulk-cancel-all-matching")

    # Audited once, in the one audit log (with the flow's pauses and limits).
    page.goto(f"{live_server.url}/admin/jobs/auditentry/")
    assert page.locator("#result_list tbody tr").count() == 1
    row = page.inner_text("#result_list tbody tr")
    assert "jobs.bulk_cancel" in row and "admin:operator" in row and '"changed": 60' in row
