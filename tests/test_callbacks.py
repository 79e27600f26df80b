"""Signed completion callbacks: submit-time checks, signed deliveries to a real receiver, retries, the guard.

The receiver is a real HTTP server on a private port (tests/callback_receiver.py); the address guard
lets it through only because each delivery test sets WEBHOOK_ALLOW_PRIVATE explicitly.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from jobs import services
from jobs.models import CallbackStatus, Job, JobEvent, JobStatus
from tests.callback_receiver import Receiver, verify
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)
S = JobStatus


@pytest.fixture
def key():
    """A stored write key: its client and its signing secret."""
    stored, full = services.api_key_create(name="shop")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=full)
    return client, stored.signing_secret


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def private_allowed(settings):
    """The explicit test setting that lets deliveries reach the receiver on 127.0.0.1."""
    settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE = True
    settings.SENTINELFLOW_CALLBACK_BACKOFF_BASE = 1


def submit(client, body: dict) -> dict:
    response = client.post("/jobs", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def callback_notes(job_id: str) -> list[str]:
    events = JobEvent.objects.filter(job__job_id=job_id, actor="callback").order_by("at", "id")
    return list(events.values_list("note", flat=True))


# --------------------------------------------------------------------------- deliveries


def test_a_finished_job_posts_its_signed_json_and_the_receiver_verifies_it(
    key, receiver, private_allowed, run_worker, store_backend
):
    client, secret = key
    job = submit(client, {"type": "echo", "payload": {"n": 42}, "callback_url": receiver.url})
    assert job["callback_status"] == "pending"
    run_worker()

    [delivery] = receiver.deliveries
    header = delivery.headers["X-Sentinelflow-Signature"]
    assert verify(secret, header, delivery.body)
    assert not verify("whsec_wrong", header, delivery.body)
    assert not verify(secret, header, delivery.body + b" ")  # an altered body fails too
    document = json.loads(delivery.body)
    assert (document["job_id"], document["status"], document["result"]) == (job["job_id"], "succeeded", {"n": 42})
    assert delivery.headers["X-Sentinelflow-Job"] == job["job_id"]
    stored = Job.objects.get(job_id=job["job_id"])
    assert (stored.callback_status, stored.callback_attempts) == (CallbackStatus.DELIVERED, 1)
    assert callback_notes(job["job_id"]) == ["callback attempt 1 delivered: HTTP 200"]


def test_failed_and_cancelled_jobs_call_back_too(key, receiver, private_allowed, run_worker):
    client, secret = key
    failed = submit(client, {"type": "fail", "max_retries": 0, "callback_url": receiver.url})
    cancelled = submit(client, {"type": "echo", "delay": 3600, "callback_url": receiver.url})
    assert client.post(f"/jobs/{cancelled['job_id']}/cancel").status_code == 202
    run_worker()
    documents = {json.loads(d.body)["job_id"]: json.loads(d.body) for d in receiver.deliveries}
    assert documents[failed["job_id"]]["status"] == "failed"
    assert "DrillFailure" in documents[failed["job_id"]]["error"]
    assert documents[cancelled["job_id"]]["status"] == "cancelled"
    assert all(verify(secret, d.headers["X-Sentinelflow-Signature"], d.body) for d in receiver.deliveries)


def test_a_failed_attempt_is_retried_by_the_sentinel_after_its_backoff(key, private_allowed, run_worker):
    client, secret = key
    flaky = Receiver(statuses=[500, 503, 200]).start()
    try:
        job = submit(client, {"type": "echo", "callback_url": flaky.url})
        run_worker()
        stored = Job.objects.get(job_id=job["job_id"])
        assert (stored.callback_status, stored.callback_attempts) == (CallbackStatus.PENDING, 1)
        assert stored.callback_due_at is not None
        assert services.callbacks_due() == 0  # not due before its backoff
        for _ in range(2):
            due_at = Job.objects.get(job_id=job["job_id"]).callback_due_at
            assert services.callbacks_due(now=due_at + timedelta(seconds=1)) == 1
            run_worker()
        assert len(flaky.deliveries) == 3
        assert all(verify(secret, d.headers["X-Sentinelflow-Signature"], d.body) for d in flaky.deliveries)
    finally:
        flaky.stop()
    notes = callback_notes(job["job_id"])
    assert notes[0].startswith("callback attempt 1 failed: HTTP 500") and "next in 1 s" in notes[0]
    assert notes[1].startswith("callback attempt 2 failed: HTTP 503") and "next in 2 s" in notes[1]
    assert notes[2] == "callback attempt 3 delivered: HTTP 200"
    assert Job.objects.get(job_id=job["job_id"]).callback_status == CallbackStatus.DELIVERED


def test_attempts_stop_at_the_limit(key, private_allowed, run_worker, settings):
    settings.SENTINELFLOW_CALLBACK_MAX_ATTEMPTS = 2
    client, _secret = key
    down = Receiver(statuses=[500]).start()
    try:
        job = submit(client, {"type": "echo", "callback_url": down.url})
        run_worker()
        due_at = Job.objects.get(job_id=job["job_id"]).callback_due_at
        assert services.callbacks_due(now=due_at + timedelta(seconds=1)) == 1
        run_worker()
        assert services.callbacks_due(now=due_at + timedelta(days=1)) == 0
    finally:
        down.stop()
    assert len(down.deliveries) == 2
    assert Job.objects.get(job_id=job["job_id"]).callback_status == CallbackStatus.FAILED
    assert callback_notes(job["job_id"])[-1].endswith("given up")


def test_an_attempt_enqueued_twice_is_sent_once(key, receiver, private_allowed):
    client, _secret = key
    job = submit(client, {"type": "echo", "delay": 3600, "callback_url": receiver.url})
    services.job_cancel(job=Job.objects.get(job_id=job["job_id"]), actor="test")
    assert "delivered" in services.callback_deliver(job_id=job["job_id"], attempt=1)
    assert "sent already" in services.callback_deliver(job_id=job["job_id"], attempt=1)
    assert len(receiver.deliveries) == 1


def test_a_lost_first_attempt_is_sent_by_the_sentinel(key, receiver, private_allowed, monkeypatch, run_worker):
    client, _secret = key
    monkeypatch.setattr(services.callbacks, "enqueue_attempts", lambda attempts: 0)  # Redis refused it
    job = submit(client, {"type": "echo", "delay": 3600, "callback_url": receiver.url})
    services.job_cancel(job=Job.objects.get(job_id=job["job_id"]), actor="test")
    monkeypatch.undo()
    assert services.callbacks_due() == 0  # the worker's grace first
    later = services.now() + services.callbacks.FIRST_ATTEMPT_GRACE + timedelta(seconds=1)
    assert services.callbacks_due(now=later) == 1
    assert services.callbacks_due(now=later) == 0  # enqueued once, not every pass
    run_worker()
    assert len(receiver.deliveries) == 1


def test_the_guard_refuses_a_private_target_at_delivery(key, receiver, settings, run_worker):
    client, _secret = key
    settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE = True  # accepted at submit...
    job = submit(client, {"type": "echo", "callback_url": receiver.url})
    settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE = False  # ... refused when it is sent
    run_worker()
    assert receiver.deliveries == []
    assert Job.objects.get(job_id=job["job_id"]).callback_status == CallbackStatus.FAILED
    [note] = callback_notes(job["job_id"])
    assert "refused" in note and "non-public address 127.0.0.1" in note and note.endswith("given up")


def test_a_manual_retry_calls_back_again(key, receiver, private_allowed, run_worker):
    client, _secret = key
    job = submit(client, {"type": "fail", "max_retries": 0, "callback_url": receiver.url})
    run_worker()
    assert client.post(f"/jobs/{job['job_id']}/retry").status_code == 202
    assert Job.objects.get(job_id=job["job_id"]).callback_status == CallbackStatus.PENDING
    run_worker()
    assert [json.loads(d.body)["attempts"] for d in receiver.deliveries] == [1, 2]


def test_retention_keeps_a_job_until_its_callback_is_settled(key, private_allowed):
    client, _secret = key
    job = submit(client, {"type": "echo", "delay": 3600, "callback_url": "http://127.0.0.1:9/never"})
    Job.objects.filter(job_id=job["job_id"]).update(
        status=S.SUCCEEDED, finished_at=services.now() - timedelta(days=100)
    )
    assert services.jobs_prune().total == 0
    Job.objects.filter(job_id=job["job_id"]).update(callback_status=CallbackStatus.FAILED)
    assert services.jobs_prune().total == 1


# --------------------------------------------------------------------------- submit-time checks


@pytest.mark.parametrize(
    "url, reason",
    [
        ("ftp://example.com/hook", "http"),
        ("http://127.0.0.1:8080/hook", "non-public"),
        ("http://10.1.2.3/hook", "non-public"),
        ("http://169.254.169.254/latest/meta-data", "non-public"),
        ("http://[::1]/hook", "non-public"),
        ("http://[::ffff:127.0.0.1]/hook", "non-public"),
        ("http://localhost/hook", "localhost"),
        ("http://a.localhost/hook", "localhost"),
        ("not a url", "valid URL"),
        ("https://example.com/" + "a" * 2100, "2048"),
        ("", "blank"),
    ],
)
def test_a_bad_callback_url_is_a_400_and_nothing_is_stored(key, url, reason):
    client, _secret = key
    response = client.post("/jobs", {"type": "echo", "callback_url": url}, format="json")
    assert response.status_code == 400
    assert reason in json.dumps(response.json()["callback_url"])
    assert not Job.objects.exists()


def test_a_bad_callback_url_in_a_batch_names_its_item(key):
    client, _secret = key
    body = {"jobs": [{"type": "echo"}, {"type": "echo", "callback_url": "http://127.0.0.1/"}]}
    response = client.post("/jobs/batch", body, format="json")
    assert response.status_code == 400 and "callback_url" in response.json()["jobs"]["1"]
    assert not Job.objects.exists()


def test_a_submitter_without_a_signing_secret_is_refused(api, key):
    response = api.post("/jobs", {"type": "echo", "callback_url": "https://example.com/hook"}, format="json")
    assert response.status_code == 400 and "stored API key" in response.json()["detail"]
    old, full = services.api_key_create(name="old-key")
    type(old).objects.filter(pk=old.pk).update(signing_secret="")  # made before callbacks existed
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=full)
    batch = {"jobs": [{"type": "echo", "callback_url": "https://example.com/hook"}]}
    assert client.post("/jobs/batch", batch, format="json").status_code == 400
    assert not Job.objects.exists()


def test_a_batch_from_a_stored_key_takes_callbacks(key):
    client, _secret = key
    body = {"jobs": [{"type": "echo", "callback_url": "https://example.com/a"}, {"type": "echo"}]}
    response = client.post("/jobs/batch", body, format="json")
    assert response.status_code == 201
    first, second = response.json()["jobs"]
    assert (first["callback_url"], first["callback_status"]) == ("https://example.com/a", "pending")
    assert (second["callback_url"], second["callback_status"]) == ("", "")


def test_readers_without_the_read_scope_see_no_callback_url(key, anon):
    client, _secret = key
    job = submit(client, {"type": "echo", "callback_url": "https://example.com/hook?token=s3cret"})
    assert anon.get(f"/jobs/{job['job_id']}").json()["callback_url"] == "[redacted]"
    assert client.get(f"/jobs/{job['job_id']}").json()["callback_url"].endswith("token=s3cret")


# --------------------------------------------------------------------------- the signing secret, shown once


def test_create_api_key_prints_the_signing_secret_once():
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "billing", stdout=out, stderr=err)
    stored = services.signing_key_for("api-key:billing")
    assert stored is not None and stored.signing_secret.startswith("whsec_")
    assert stored.signing_secret in err.getvalue()
    assert stored.signing_secret not in out.getvalue()  # stdout stays the key alone, for scripts


def test_the_admin_shows_the_signing_secret_once_at_creation(client):
    client.force_login(make_user("root", superuser=True))
    response = client.post("/admin/jobs/apikey/add/", {"name": "crm", "scope": "write"}, follow=True)
    stored = services.signing_key_for("api-key:crm")
    assert stored is not None
    assert stored.signing_secret in response.content.decode()
    change_page = client.get(f"/admin/jobs/apikey/{stored.pk}/change/").content.decode()
    assert stored.signing_secret not in change_page
