"""POST /jobs/batch: all validated before any is stored, one response in order, same auth and idempotency."""

from __future__ import annotations

import pytest

from jobs import redis_store
from jobs.models import Job, JobEvent

pytestmark = pytest.mark.django_db(transaction=True)


def bodies(count: int) -> list[dict]:
    return [{"type": "echo", "payload": {"n": n}} for n in range(count)]


def test_batch_returns_201_with_every_job_in_order_and_enqueues_them(api, metric, run_worker):
    response = api.post("/jobs/batch", {"jobs": [*bodies(5), {"type": "echo", "queue": "high"}]}, format="json")

    assert response.status_code == 201
    jobs = response.json()["jobs"]
    assert [job["payload"] for job in jobs] == [{"n": n} for n in range(5)] + [{}]
    assert redis_store.queue("default").job_ids == [job["job_id"] for job in jobs[:5]]
    assert redis_store.queue("high").job_ids == [jobs[5]["job_id"]]
    assert metric("jobs_submitted_total", type="echo") == 6
    assert metric("jobs_enqueued_total", type="echo", queue="default") == 5
    assert JobEvent.objects.count() == 6
    run_worker()
    assert set(Job.objects.values_list("status", flat=True)) == {"succeeded"}


def test_batch_with_one_bad_item_stores_nothing_and_names_the_index(api):
    items = [*bodies(3), {"type": "sleep", "payload": {}}, *bodies(1), {"type": "nope"}]

    response = api.post("/jobs/batch/", {"jobs": items}, format="json")

    assert response.status_code == 400
    errors = response.json()["jobs"]
    assert set(errors) == {"3", "5"}
    assert "payload" in errors["3"] and "type" in errors["5"]
    assert Job.objects.count() == 0
    assert redis_store.queue("default").job_ids == []


@pytest.mark.parametrize("body", [{"jobs": []}, {"jobs": "echo"}, {}, {"jobs": [{"type": "echo"}] * 1001}])
def test_batch_that_is_empty_not_a_list_or_too_long_is_400(api, body):
    response = api.post("/jobs/batch", body, format="json")

    assert response.status_code == 400
    assert "jobs" in response.json()
    assert Job.objects.count() == 0


def test_batch_of_1000_is_accepted(api):
    response = api.post("/jobs/batch", {"jobs": bodies(1000)}, format="json")

    assert response.status_code == 201
    assert len(response.json()["jobs"]) == Job.objects.count() == 1000
    assert redis_store.queue("default").count == 1000


def test_batch_repeated_idempotency_key_returns_the_same_jobs(api):
    first = api.post("/jobs/batch", {"jobs": bodies(3)}, format="json", HTTP_IDEMPOTENCY_KEY="import-7")
    second = api.post("/jobs/batch", {"jobs": bodies(3)}, format="json", HTTP_IDEMPOTENCY_KEY="import-7")
    other = api.post("/jobs/batch", {"jobs": bodies(2)}, format="json", HTTP_IDEMPOTENCY_KEY="import-7")

    assert (first.status_code, second.status_code, other.status_code) == (201, 200, 422)
    assert [j["job_id"] for j in second.json()["jobs"]] == [j["job_id"] for j in first.json()["jobs"]]
    assert Job.objects.count() == 3
    assert len(redis_store.queue("default").job_ids) == 3


def test_batch_needs_a_write_key(anon):
    response = anon.post("/jobs/batch", {"jobs": bodies(1)}, format="json")

    assert response.status_code == 401
    assert Job.objects.count() == 0


def test_batch_with_redis_down_keeps_every_job_pending(api, monkeypatch):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(redis_store, "connection", lambda: dead)

    response = api.post("/jobs/batch", {"jobs": [*bodies(3), {"type": "echo", "queue": "high"}]}, format="json")

    assert response.status_code == 201
    assert [job["status"] for job in response.json()["jobs"]] == ["pending"] * 4
    assert set(Job.objects.values_list("status", flat=True)) == {"pending"}
    assert JobEvent.objects.filter(to_status="pending", actor="redis unavailable").count() == 4
