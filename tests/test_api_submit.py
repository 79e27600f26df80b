"""POST /jobs: the happy path, idempotency and every refusal."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs import redis_store
from jobs.models import Job, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)


def queued_ids(queue: str = "default") -> list[str]:
    return redis_store.queue(queue).job_ids


def test_submit_returns_201_with_job_and_location(api):
    response = api.post("/jobs", {"type": "echo", "payload": {"n": 1}}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    assert body["type"] == "echo"
    assert body["payload"] == {"n": 1}
    assert body["attempts"] == 0
    assert response["Location"].endswith(f"/jobs/{body['job_id']}")
    assert queued_ids() == [body["job_id"]]
    assert set(body) == {
        "job_id",
        "type",
        "payload",
        "status",
        "queue",
        "attempts",
        "max_retries",
        "timeout",
        "run_at",
        "idempotency_key",
        "schedule",
        "callback_url",
        "callback_status",
        "callback_attempts",
        "unique_key",
        "unique_until",
        "tags",
        "metadata",
        "workflow_id",
        "node",
        "allow_failure",
        "progress",
        "progress_message",
        "result",
        "error",
        "created_at",
        "enqueued_at",
        "started_at",
        "finished_at",
        "updated_at",
    }


def test_submit_with_trailing_slash_is_answered_not_redirected(api):
    response = api.post("/jobs/", {"type": "echo"}, format="json")

    assert response.status_code == 201


def test_times_are_utc_whatever_time_zone_says(api, settings):
    settings.TIME_ZONE = "Asia/Tokyo"

    body = api.post("/jobs", {"type": "echo"}, format="json").json()

    assert body["created_at"].endswith("Z")


def test_submit_to_named_queue_with_options(api):
    body = api.post("/jobs", {"type": "echo", "queue": "high", "max_retries": 0, "timeout": 7}, format="json").json()

    assert (body["queue"], body["max_retries"], body["timeout"]) == ("high", 0, 7)
    assert queued_ids("high") == [body["job_id"]]


def test_submit_with_delay_is_scheduled_not_queued(api):
    before = timezone.now()

    body = api.post("/jobs", {"type": "echo", "delay": 60}, format="json").json()

    assert body["status"] == "scheduled"
    run_at = Job.objects.get(job_id=body["job_id"]).run_at
    assert before + timedelta(seconds=59) < run_at < timezone.now() + timedelta(seconds=61)
    assert queued_ids() == []
    assert redis_store.queue("default").scheduled_job_registry.get_job_ids() == [body["job_id"]]


def test_submit_with_run_at_in_the_past_runs_now(api):
    past = (timezone.now() - timedelta(hours=1)).isoformat()

    body = api.post("/jobs", {"type": "echo", "run_at": past}, format="json").json()

    assert body["status"] == "queued"


def test_repeated_idempotency_key_returns_same_job_with_200(api, metric):
    first = api.post("/jobs", {"type": "echo"}, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    second = api.post("/jobs", {"type": "echo"}, format="json", HTTP_IDEMPOTENCY_KEY="order-42")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["job_id"] == first.json()["job_id"]
    assert second.json()["idempotency_key"] == "order-42"
    assert Job.objects.count() == 1
    assert len(queued_ids()) == 1
    assert metric("jobs_submitted_total", type="echo") == 1


def test_idempotency_key_reused_with_other_body_is_422(api):
    api.post("/jobs", {"type": "echo", "payload": {"a": 1}}, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    response = api.post("/jobs", {"type": "echo", "payload": {"a": 2}}, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert Job.objects.count() == 1


@pytest.mark.parametrize("key", ["x" * 256, "caf\u00e9", "tab\there", ""])
def test_bad_idempotency_key_is_400_and_stores_nothing(api, key):
    response = api.post("/jobs", {"type": "echo"}, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "nope"}, "type"),
        ({}, "type"),
        ({"type": "sleep", "payload": {}}, "payload"),
        ({"type": "sleep", "payload": {"seconds": -1}}, "payload"),
        ({"type": "email", "payload": {"to": "not-an-address"}}, "payload"),
        ({"type": "echo", "payload": [1, 2]}, "payload"),
        ({"type": "echo", "queue": "urgent"}, "queue"),
        ({"type": "echo", "max_retries": -1}, "max_retries"),
        ({"type": "echo", "timeout": 0}, "timeout"),
        ({"type": "echo", "timeout": 10**9}, "timeout"),
        ({"type": "echo", "run_at": "yesterday"}, "run_at"),
        ({"type": "echo", "delay": -5}, "delay"),
        ({"type": "echo", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}, "delay"),
        ({"type": "echo", "max_retry": 3}, "max_retry"),
    ],
)
def test_invalid_submission_is_400_naming_the_field(api, body, field):
    response = api.post("/jobs", body, format="json")

    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert Job.objects.count() == 0
    assert queued_ids() == []


def test_payload_error_names_the_payload_field(api):
    response = api.post("/jobs", {"type": "sleep", "payload": {"seconds": "long"}}, format="json")

    assert response.json()["payload"]["seconds"] == ["A valid number is required."]


def test_body_that_is_not_an_object_is_400(api):
    response = api.post("/jobs", [1, 2], format="json")

    assert response.status_code == 400


def test_malformed_json_is_400(api):
    response = api.post("/jobs", data='{"type": "echo",', content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_form_encoded_post_is_415_saying_to_send_json(api):
    response = api.post("/jobs", data="type=echo", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    detail = response.json()["detail"]
    assert "Content-Type: application/json" in detail
    assert '"application/x-www-form-urlencoded"' in detail
    assert Job.objects.count() == 0


def test_415_repeats_only_the_start_of_a_huge_content_type(api):
    response = api.post("/jobs", data="x", content_type="application/" + "x" * 10_000)

    assert response.status_code == 415
    assert len(response.json()["detail"]) < 300


def test_body_over_the_limit_is_413(api, settings):
    settings.MAX_BODY_BYTES = 1000
    body = json.dumps({"type": "echo", "payload": {"blob": "x" * 2000}})

    response = api.post("/jobs", data=body, content_type="application/json")

    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert Job.objects.count() == 0


def test_missing_api_key_is_401(anon):
    response = anon.post("/jobs", {"type": "echo"}, format="json")

    assert response.status_code == 401
    assert "X-API-Key" in response.json()["detail"]
    assert "WWW-Authenticate" in response
    assert Job.objects.count() == 0


def test_unknown_api_key_is_401(anon):
    anon.credentials(HTTP_X_API_KEY="dev-key-but-wrong")

    response = anon.post("/jobs", {"type": "echo"}, format="json")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API key."}


def test_submit_with_redis_down_keeps_job_pending(api, monkeypatch):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(redis_store, "connection", lambda: dead)

    response = api.post("/jobs", {"type": "echo"}, format="json")

    assert response.status_code == 201
    assert response.json()["status"] == JobStatus.PENDING
    assert Job.objects.get().status == JobStatus.PENDING


@pytest.mark.parametrize("path", ["/jobs", "/jobs/batch"])
def test_submit_with_database_down_is_503_and_enqueues_nothing(api, path):
    from django.db import OperationalError, connection

    def refuse(execute, sql, params, many, context):
        raise OperationalError("connection refused")

    body = {"type": "echo"} if path == "/jobs" else {"jobs": [{"type": "echo"}] * 2}
    with connection.execute_wrapper(refuse):  # every statement, whichever way the job is stored
        response = api.post(path, body, format="json")

    assert response.status_code == 503
    assert "detail" in response.json()
    assert queued_ids() == []


def test_a_submit_makes_one_redis_round_trip(api, monkeypatch):
    """With the default settings (no per-key throttle) a submit's RQ enqueue and its counters share one
    pipeline: one round trip to Redis (after the process's first enqueue, which asks the server's version)."""
    import redis

    assert api.post("/jobs", {"type": "echo"}, format="json").status_code == 201
    sends: list[object] = []
    send = redis.Connection.send_packed_command

    def counting(self, command, check_health=True):
        sends.append(command)
        return send(self, command, check_health)

    monkeypatch.setattr(redis.Connection, "send_packed_command", counting)
    response = api.post("/jobs", {"type": "echo", "payload": {"n": 2}}, format="json")

    assert response.status_code == 201
    assert len(sends) == 1
    assert queued_ids()[-1] == response.json()["job_id"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's insert runs as a prepared statement")
@pytest.mark.parametrize("path", ["/jobs", "/jobs/batch"])
def test_submit_whose_database_connection_died_is_503_and_enqueues_nothing(api, path):
    """The prepared insert (not through Django's cursor) still turns a lost database into a 503."""
    import psycopg

    connection.ensure_connection()
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])

    body = {"type": "echo"} if path == "/jobs" else {"jobs": [{"type": "echo"}] * 2}
    response = api.post(path, body, format="json")

    assert response.status_code == 503
    assert queued_ids() == []
    # What Django does at the end of every request (the test client leaves it out) drops the dead connection.
    connection.close_if_unusable_or_obsolete()
    assert api.post(path, body, format="json").status_code == 201
