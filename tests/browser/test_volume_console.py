"""Issue 18 in a real browser: failure groups and "Retry this group"; a key's signing secret, shown once;
a callback's delivery attempts on the job's timeline."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Job, JobStatus
from tests.callback_receiver import Receiver, verify

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)


def test_failure_groups_page_groups_failures_and_retries_a_group(logged_in, live_server, submit, run_worker):
    for number in (3, 41, 592):
        submit({"type": "fail", "max_retries": 0, "payload": {"message": f"order {number} timed out"}})
    submit({"type": "fail", "max_retries": 0, "payload": {"message": "disk full"}})
    run_worker()
    page = logged_in

    page.click("text=Failure groups")

    page.wait_for_selector("#sf-failure-groups")
    counts = sorted(page.locator(".sf-group .sf-count").all_inner_texts())
    assert counts == ["1", "3"]
    group = page.locator(".sf-group", has_text="timed out")
    group.locator("summary").click()
    assert "Traceback" in group.locator(".sf-traceback").inner_text()
    shot(page, "failure-groups")
    group.locator("input.sf-retry-group").click()
    assert "Retried 3 failed job(s)" in page.inner_text("ul.messagelist")
    assert Job.objects.filter(status=JobStatus.QUEUED).count() == 3
    assert page.locator(".sf-group").count() == 1  # only "disk full" is left


def test_a_new_key_shows_its_signing_secret_once_and_it_verifies_callbacks(
    logged_in, live_server, run_worker, settings
):
    settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE = True  # the explicit setting: the receiver is on 127.0.0.1
    page = logged_in
    page.goto(f"{live_server.url}/admin/jobs/apikey/add/")
    page.fill("#id_name", "shop")
    page.click("input[name=_save]")
    key = page.inner_text("#sf-new-key")
    secret = page.inner_text("#sf-signing-secret")
    assert secret.startswith("whsec_")
    page.reload()
    assert page.locator("#sf-signing-secret").count() == 0

    receiver = Receiver().start()
    try:
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=key)
        job = client.post("/jobs", {"type": "echo", "callback_url": receiver.url}, format="json").json()
        run_worker()
        [delivery] = receiver.deliveries
        assert verify(secret, delivery.headers["X-Sentinelflow-Signature"], delivery.body)
    finally:
        receiver.stop()

    page.goto(f"{live_server.url}/admin/jobs/job/{Job.objects.get(job_id=job['job_id']).pk}/change/")
    assert "callback attempt 1 delivered: HTTP 200" in page.inner_text(".sf-timeline")
    shot(page, "callback-timeline")
    assert services.signing_key_for("api-key:shop") is not None
