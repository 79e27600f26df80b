"""Reads are open by default, so a reader without the read scope never sees secrets: payload fields
the job type calls secret, results and errors (tracebacks name server paths) come back "[redacted]"."""

from __future__ import annotations

import json

import pytest

from jobs.api.serializers import REDACTED
from jobs.handlers import REGISTRY, job_type
from jobs.handlers.echo import EchoPayload
from jobs.models import Job
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)

WEBHOOK = {
    "url": "https://hooks.example.com/services/T0/B0/s3cret-path",
    "headers": {"Authorization": "Bearer s3cret-token"},
    "body": {"password": "s3cret-body"},
}


@pytest.fixture
def failed_webhook(submit, run_worker, monkeypatch) -> str:
    from jobs.handlers import webhook

    def refuse(url):
        raise RuntimeError("internal answer: s3cret-internal from /srv/app/jobs/handlers/webhook.py")

    monkeypatch.setattr(webhook, "check_target", refuse)
    job = submit({"type": "webhook", "payload": WEBHOOK, "max_retries": 0})
    run_worker()
    assert Job.objects.get(job_id=job["job_id"]).status == "failed"
    return job["job_id"]


def test_anonymous_reader_sees_no_webhook_secret_nor_traceback(anon, failed_webhook):
    one = anon.get(f"/jobs/{failed_webhook}").json()
    listed = anon.get("/jobs").json()["results"][0]

    for job in (one, listed):
        assert "s3cret" not in json.dumps(job)
        assert job["payload"] == {"url": REDACTED, "headers": REDACTED, "body": REDACTED}
        assert job["error"] == REDACTED
        assert (job["status"], job["type"]) == ("failed", "webhook")


def test_a_read_key_sees_everything(api, failed_webhook):
    job = api.get(f"/jobs/{failed_webhook}").json()

    assert job["payload"] == WEBHOOK
    assert "s3cret-internal" in job["error"] and "Traceback" in job["error"]


def test_anonymous_reader_sees_no_email_body_nor_result(anon, submit, run_worker):
    email = submit({"type": "email", "payload": {"to": ["a@example.com"], "subject": "Hi", "body": "s3cret"}})
    echo = submit({"type": "echo", "payload": {"note": "shown"}})
    run_worker()

    email_seen = anon.get(f"/jobs/{email['job_id']}").json()
    echo_seen = anon.get(f"/jobs/{echo['job_id']}").json()

    assert email_seen["payload"] == {"to": ["a@example.com"], "subject": "Hi", "body": REDACTED}
    assert email_seen["result"] == REDACTED
    assert (echo_seen["status"], echo_seen["payload"], echo_seen["result"]) == (
        "succeeded",
        {"note": "shown"},
        REDACTED,
    )


def test_a_job_type_that_names_no_secret_fields_hides_its_whole_payload(anon, submit):
    @job_type("test-undeclared", payload_serializer=EchoPayload)
    def undeclared(payload, context):
        return payload

    try:
        job = submit({"type": "test-undeclared", "payload": {"token": "s3cret"}})
        seen = anon.get(f"/jobs/{job['job_id']}").json()
    finally:
        del REGISTRY["test-undeclared"]

    assert seen["payload"] == {"token": REDACTED}


def test_sessions_see_secrets_only_with_the_view_permission(anon, failed_webhook):
    bare = make_user("bare")
    viewer = make_user("viewer", "view_job")

    anon.force_login(bare)
    assert anon.get(f"/jobs/{failed_webhook}").json()["error"] == REDACTED
    anon.force_login(viewer)
    assert anon.get(f"/jobs/{failed_webhook}").json()["payload"] == WEBHOOK


def test_reads_require_key_still_closes_reads(anon, failed_webhook, settings):
    settings.SENTINELFLOW_READS_REQUIRE_KEY = True

    assert anon.get(f"/jobs/{failed_webhook}").status_code == 401
    assert anon.get("/jobs").status_code == 401
