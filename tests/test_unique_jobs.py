"""Unique jobs: `unique_key` and `unique_for` on POST /jobs and /jobs/batch, and a job type's default key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from rest_framework.test import APIClient

from jobs import services
from jobs.handlers import REGISTRY, job_type
from jobs.handlers.echo import EchoPayload
from jobs.models import Job, JobStatus
from jobs.services import transitions

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def per_customer():
    """A job type unique per payload customer_id for an hour."""

    @job_type(
        "per_customer",
        payload_serializer=EchoPayload,
        secret_fields=("secret",),
        unique_by=("customer_id",),
        unique_for=3600,
    )
    def run(payload: dict[str, Any], context: Any) -> dict[str, Any]:
        return payload

    yield "per_customer"
    REGISTRY.pop("per_customer", None)


def client_with_key(name: str, scope: str = "write") -> APIClient:
    _, full = services.api_key_create(name=name, scope=scope)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=full)
    return client


def post(client: APIClient, body: dict) -> Any:
    return client.post("/jobs", body, format="json")


def test_a_second_submit_with_the_key_is_200_with_the_first_job(api):
    first = post(api, {"type": "echo", "payload": {"n": 1}, "unique_key": "report-7", "unique_for": 60})
    again = post(api, {"type": "echo", "payload": {"n": 2}, "unique_key": "report-7", "unique_for": 60})

    assert first.status_code == 201
    assert first.json()["unique_key"] == "report-7"
    assert again.status_code == 200
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["payload"] == {"n": 1}
    assert again["Location"].endswith(f"/jobs/{first.json()['job_id']}")
    assert Job.objects.count() == 1


def test_the_key_is_per_type(api):
    echo = post(api, {"type": "echo", "unique_key": "k"})
    sleep = post(api, {"type": "sleep", "payload": {"seconds": 0}, "unique_key": "k"})

    assert (echo.status_code, sleep.status_code) == (201, 201)
    assert Job.objects.count() == 2


def test_a_finished_job_no_longer_holds_its_key(api):
    first = post(api, {"type": "echo", "unique_key": "k", "unique_for": 600}).json()
    Job.objects.filter(job_id=first["job_id"]).update(status=JobStatus.SUCCEEDED)

    again = post(api, {"type": "echo", "unique_key": "k", "unique_for": 600})

    assert again.status_code == 201
    assert again.json()["job_id"] != first["job_id"]


def test_after_the_window_an_unfinished_job_no_longer_holds_its_key(api):
    start = transitions.now()
    first = post(api, {"type": "echo", "unique_key": "k", "unique_for": 10}).json()
    with mock.patch.object(transitions, "now", return_value=start + timedelta(seconds=11)):
        again = post(api, {"type": "echo", "unique_key": "k", "unique_for": 10})

    assert again.status_code == 201
    old = Job.objects.get(job_id=first["job_id"])
    assert old.unique_key == "k"  # kept for the record
    assert old.unique_claim is None
    assert Job.objects.get(job_id=again.json()["job_id"]).unique_claim == "k"


def test_without_unique_for_the_key_is_held_until_the_job_finishes(api):
    start = transitions.now()
    first = post(api, {"type": "echo", "unique_key": "k"}).json()
    with mock.patch.object(transitions, "now", return_value=start + timedelta(days=400)):
        again = post(api, {"type": "echo", "unique_key": "k"})

    assert first["unique_until"] is None
    assert again.status_code == 200
    assert again.json()["job_id"] == first["job_id"]


def test_a_job_type_default_key_comes_from_its_payload_fields(api, per_customer):
    first = post(api, {"type": per_customer, "payload": {"customer_id": 42, "n": 1}})
    same = post(api, {"type": per_customer, "payload": {"customer_id": 42, "n": 2}})
    other = post(api, {"type": per_customer, "payload": {"customer_id": 43}})

    assert first.status_code == 201
    assert first.json()["unique_key"] == "customer_id=42"
    assert first.json()["unique_until"] is not None
    assert same.status_code == 200
    assert same.json()["job_id"] == first.json()["job_id"]
    assert other.status_code == 201


def test_a_submit_key_overrides_the_type_default(api, per_customer):
    first = post(api, {"type": per_customer, "payload": {"customer_id": 42}, "unique_key": "mine"})
    default = post(api, {"type": per_customer, "payload": {"customer_id": 42}})

    assert first.json()["unique_key"] == "mine"
    assert default.status_code == 201


def test_a_retried_job_gives_up_its_claim(api):
    first = post(api, {"type": "echo", "unique_key": "k"}).json()
    Job.objects.filter(job_id=first["job_id"]).update(status=JobStatus.FAILED)
    second = post(api, {"type": "echo", "unique_key": "k"}).json()

    retried = api.post(f"/jobs/{first['job_id']}/retry")

    assert retried.status_code == 202
    assert Job.objects.get(job_id=first["job_id"]).unique_claim is None
    assert post(api, {"type": "echo", "unique_key": "k"}).json()["job_id"] == second["job_id"]


def test_an_idempotency_key_repeat_still_answers_its_own_job(api):
    body = {"type": "echo", "unique_key": "k"}
    first = api.post("/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="i-1")
    again = api.post("/jobs", body, format="json", HTTP_IDEMPOTENCY_KEY="i-1")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["job_id"] == first.json()["job_id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"unique_key": ""}, "unique_key"),
        ({"unique_key": "x" * 256}, "unique_key"),
        ({"unique_key": " padded "}, "unique_key"),
        ({"unique_key": "line\nbreak"}, "unique_key"),
        ({"unique_key": 5}, "unique_key"),
        ({"unique_key": "k", "unique_for": 0}, "unique_for"),
        ({"unique_key": "k", "unique_for": -5}, "unique_for"),
        ({"unique_key": "k", "unique_for": 10**12}, "unique_for"),
        ({"unique_key": "k", "unique_for": "soon"}, "unique_for"),
        ({"unique_for": 60}, "unique_for"),
    ],
)
def test_bad_unique_fields_are_400_naming_the_field(api, body, field):
    response = post(api, {"type": "echo", **body})

    assert response.status_code == 400
    assert field in response.json()
    assert Job.objects.count() == 0


def test_unique_for_without_key_is_fine_when_the_type_declares_one(api, per_customer):
    response = post(api, {"type": per_customer, "payload": {"customer_id": 1}, "unique_for": 5})

    assert response.status_code == 201


def test_batch_items_are_unique_against_stored_jobs_and_each_other(api):
    held = post(api, {"type": "echo", "unique_key": "a"}).json()

    response = api.post(
        "/jobs/batch",
        {
            "jobs": [
                {"type": "echo", "unique_key": "a"},
                {"type": "echo", "unique_key": "b"},
                {"type": "echo", "unique_key": "b"},
                {"type": "echo"},
            ]
        },
        format="json",
    )

    assert response.status_code == 201
    ids = [job["job_id"] for job in response.json()["jobs"]]
    assert ids[0] == held["job_id"]
    assert ids[1] == ids[2]
    assert len(set(ids)) == 3
    assert Job.objects.count() == 3


def test_a_batch_whose_items_are_all_held_is_200(api):
    held = post(api, {"type": "echo", "unique_key": "a"}).json()

    response = api.post("/jobs/batch", {"jobs": [{"type": "echo", "unique_key": "a"}]}, format="json")

    assert response.status_code == 200
    assert response.json()["jobs"][0]["job_id"] == held["job_id"]


def test_a_repeated_batch_with_an_idempotency_key_and_held_items_answers_the_same_jobs(api):
    held = post(api, {"type": "echo", "unique_key": "a"}).json()
    body = {"jobs": [{"type": "echo", "unique_key": "a"}, {"type": "echo", "payload": {"n": 1}}]}

    first = api.post("/jobs/batch", body, format="json", HTTP_IDEMPOTENCY_KEY="b-1")
    again = api.post("/jobs/batch", body, format="json", HTTP_IDEMPOTENCY_KEY="b-1")

    assert (first.status_code, again.status_code) == (201, 200)
    assert [job["job_id"] for job in again.json()["jobs"]] == [job["job_id"] for job in first.json()["jobs"]]
    assert first.json()["jobs"][0]["job_id"] == held["job_id"]
    assert Job.objects.count() == 2


def test_batch_bad_unique_fields_are_400_naming_the_index_and_field(api):
    response = api.post("/jobs/batch", {"jobs": [{"type": "echo"}, {"type": "echo", "unique_key": ""}]}, format="json")

    assert response.status_code == 400
    assert "unique_key" in response.json()["jobs"]["1"]


# The attack: unique keys are global per type (that is the feature), so a caller can collide with another
# caller's job. The 200 names the job (id, status) but never shows another submitter's payload secrets,
# result or error; the caller's own payload is not stored anywhere.
def test_a_collision_with_another_keys_job_does_not_reveal_its_secrets(per_customer):
    alice, mallory = client_with_key("alice"), client_with_key("mallory")
    mine = post(alice, {"type": per_customer, "payload": {"customer_id": 7, "secret": "alice-token"}})
    Job.objects.filter(job_id=mine.json()["job_id"]).update(result={"token": "alice-result"}, error="Trace /srv")

    probe = post(mallory, {"type": per_customer, "payload": {"customer_id": 7, "secret": "mallory"}})

    assert probe.status_code == 200
    body = probe.json()
    assert body["job_id"] == mine.json()["job_id"]
    assert "alice-token" not in probe.content.decode()
    assert "alice-result" not in probe.content.decode()
    assert body["payload"]["secret"] == "[redacted]"
    assert body["result"] == "[redacted]"
    assert body["error"] == "[redacted]"
    assert Job.objects.get().payload["secret"] == "alice-token"  # nothing of mallory's was stored
    # The submitter itself still gets everything back.
    own = post(alice, {"type": per_customer, "payload": {"customer_id": 7}})
    assert own.json()["payload"]["secret"] == "alice-token"


def test_an_idempotency_key_of_another_caller_is_not_a_unique_collision():
    alice, mallory = client_with_key("alice"), client_with_key("mallory")
    mine = alice.post("/jobs", {"type": "echo", "payload": {"a": 1}}, format="json", HTTP_IDEMPOTENCY_KEY="same")

    theirs = mallory.post("/jobs", {"type": "echo", "payload": {"b": 1}}, format="json", HTTP_IDEMPOTENCY_KEY="same")

    assert theirs.status_code == 201
    assert theirs.json()["job_id"] != mine.json()["job_id"]


def test_the_database_decides_when_the_check_is_raced(api):
    """Both submits pass the lookup (as two racing requests do); the unique index lets one insert win,
    and the loser answers with the winner's job."""
    first = post(api, {"type": "echo", "unique_key": "k"}).json()
    real_holder = services.submission.unique_holder
    calls = []

    def blind_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return None if len(calls) == 1 else real_holder(*args, **kwargs)

    with mock.patch.object(services.submission, "unique_holder", side_effect=blind_once):
        again = post(api, {"type": "echo", "unique_key": "k"})

    assert again.status_code == 200
    assert again.json()["job_id"] == first["job_id"]
    assert Job.objects.count() == 1


def test_a_job_type_cannot_declare_a_window_without_a_key():
    with pytest.raises(ValueError, match="unique_for"):
        job_type("bad_unique", payload_serializer=EchoPayload, unique_for=10)


def test_redis_losing_everything_does_not_free_a_key(api):
    """The claim lives in the database: a flushed Redis (the job is restored later by the sentinel) changes nothing."""
    from jobs import redis_store

    first = post(api, {"type": "echo", "unique_key": "k"}).json()
    redis_store.connection().flushall()

    again = post(api, {"type": "echo", "unique_key": "k"})

    assert again.status_code == 200
    assert again.json()["job_id"] == first["job_id"]
