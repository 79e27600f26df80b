"""The HTTP contract of the real server (gunicorn, two worker processes, real Redis and database)."""

from __future__ import annotations

import uuid

import pytest

from .harness import API_KEY, Api

pytestmark = pytest.mark.integration


def test_health_and_readiness(api: Api) -> None:
    health = api.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}

    ready = api.get("/readyz")

    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok", body
    assert body["checks"]["redis"]["status"] == "ok", body
    assert isinstance(body.get("workers"), int), f"docs/design.md: /readyz reports the number of workers; got {body}"


def test_metrics_expose_every_job_family(api: Api) -> None:
    metrics = api.metrics()

    for name in ("jobs_submitted_total", "jobs_started_total", "jobs_succeeded_total", "jobs_failed_total"):
        assert metrics.has(name, type="echo"), name
    assert metrics.has("jobs_enqueued_total", type="echo", queue="low")
    assert metrics.has("jobs_retried_total", type="fail", reason="recovered")
    assert metrics.has("jobs_cancelled_total", type="sleep")
    assert metrics.has("job_duration_seconds_count", type="echo")
    assert metrics.has("job_wait_seconds_count", type="echo")
    for queue in ("high", "default", "low"):
        assert metrics.has("jobs_queue_depth", queue=queue)
    assert metrics.has("jobs_workers")


def test_writes_need_the_api_key(api: Api) -> None:
    body = {"type": "echo", "payload": {}}

    assert api.post("/jobs", body, key=None).status_code == 401
    assert api.post("/jobs", body, key="wrong-key").status_code == 401
    missing = api.post(f"/jobs/{uuid.uuid4()}/cancel", key=None)
    assert missing.status_code == 401
    assert "detail" in missing.json()


def test_submit_with_trailing_slash_is_answered_not_redirected(api: Api) -> None:
    response = api.post("/jobs/", {"type": "echo", "payload": {"slash": True}})

    assert response.status_code == 201, response.text
    api.submitted.append(response.json()["job_id"])
    assert api.get(f"/jobs/{response.json()['job_id']}/").status_code == 200


def test_bad_submissions_name_the_field(api: Api) -> None:
    unknown = api.post("/jobs", {"type": "no-such-type", "payload": {}})
    assert unknown.status_code == 400 and "type" in unknown.json(), unknown.text

    bad_payload = api.post("/jobs", {"type": "sleep", "payload": {"seconds": "long"}})
    assert bad_payload.status_code == 400 and "payload" in bad_payload.json(), bad_payload.text

    assert api.get(f"/jobs/{uuid.uuid4()}").status_code == 404
    assert api.post(f"/jobs/{uuid.uuid4()}/retry").status_code == 404


def test_repeated_idempotency_key_returns_the_same_job(api: Api) -> None:
    key = f"it-{uuid.uuid4()}"
    body = {"type": "echo", "payload": {"once": True}}
    before = api.metrics()

    first = api.post("/jobs", body, headers={"Idempotency-Key": key})
    # Whichever gunicorn worker answers, the key is known: the database is the record.
    repeats = [api.post("/jobs", body, headers={"Idempotency-Key": key}) for _ in range(3)]

    assert first.status_code == 201, first.text
    api.submitted.append(first.json()["job_id"])
    for repeat in repeats:
        assert repeat.status_code == 200, repeat.text
        assert repeat.json()["job_id"] == first.json()["job_id"]
    after = api.metrics()
    assert after.value("jobs_submitted_total", type="echo") == before.value("jobs_submitted_total", type="echo") + 1


def test_chunked_submit_through_gunicorn_is_411(api: Api) -> None:
    def chunks():
        yield b'{"type": "echo", '
        yield b'"payload": {}}'

    response = api.session.post(
        api.url("/jobs"),
        data=chunks(),  # a generator body: requests sends it chunked, without Content-Length
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        timeout=10,
    )

    assert response.status_code == 411, response.text
    assert "Content-Length" in response.json()["detail"]
