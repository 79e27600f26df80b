"""Flow control through the API: GET /types, PATCH /types/{name}, GET /queues, POST /queues/{name}/pause and
/resume (scopes, refusals, audit), and what a burst worker does with a paused queue or type (fakeredis: the
limits' Lua scripts run against a real Redis in tests/integration/test_flow_control.py)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from jobs import redis_store, services
from jobs.models import AuditEntry, Job, JobTypeSettings, QueueState

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_flow_state():
    services.forget_flow_state()
    yield
    services.forget_flow_state()


def key_client(scope: str) -> APIClient:
    _, full = services.api_key_create(name=f"key-{scope}", scope=scope)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=full)
    return client


def by_name(entries: list[dict]) -> dict[str, dict]:
    return {entry["name"]: entry for entry in entries}


# ----------------------------------------------------------------------------- /types


def test_types_lists_every_registered_type_with_its_flow_control(api):
    response = api.get("/types")
    assert response.status_code == 200
    types = by_name(response.json())
    assert {"echo", "sleep", "fail"} <= set(types)
    assert types["echo"] | {"updated_at": None} == {
        "name": "echo",
        "max_concurrency": None,
        "rate": None,
        "limit_by": None,
        "paused": False,
        "held": 0,
        "declared": {"max_concurrency": None, "rate": None},
        "overridden": [],
        "updated_at": None,
    }


def test_patch_sets_limits_and_null_removes_them(api):
    response = api.patch("/types/echo", {"max_concurrency": 2, "rate": "5/s"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["max_concurrency"] == 2 and response.json()["rate"] == "5/s"
    assert services.flow_state(fresh=True).policy_for("echo").max_concurrency == 2
    response = api.patch("/types/echo", {"max_concurrency": None}, format="json")
    assert response.json()["max_concurrency"] is None and response.json()["rate"] == "5/s"
    assert response.json()["overridden"] == ["max_concurrency", "rate"]
    events = list(AuditEntry.objects.filter(target="echo", action="type.limits"))
    assert len(events) == 2 and events[0].actor.startswith("api-key:")
    assert events[0].detail["set"] == {"max_concurrency": None} and events[1].detail["set"]["rate"] == "5/s"


def test_null_override_removes_a_declared_limit(api, monkeypatch):
    from jobs.handlers import REGISTRY

    declared = REGISTRY["echo"]
    monkeypatch.setitem(REGISTRY, "echo", type(declared)(**{**declared.__dict__, "max_concurrency": 3}))
    assert by_name(api.get("/types").json())["echo"]["max_concurrency"] == 3
    api.patch("/types/echo", {"max_concurrency": None}, format="json")
    entry = by_name(api.get("/types").json())["echo"]
    assert entry["max_concurrency"] is None and entry["declared"]["max_concurrency"] == 3
    assert services.flow_state(fresh=True).policy_for("echo") is None


@pytest.mark.parametrize(
    "body",
    [
        {"rate": "5/x"},
        {"rate": "0/s"},
        {"rate": "five"},
        {"rate": "5/s; DROP"},
        {"max_concurrency": 0},
        {"max_concurrency": "2"},
        {"paused": "maybe"},
        {"colour": "red"},
        {},
        [],
    ],
)
def test_bad_bodies_are_400_and_change_nothing(api, body):
    response = api.patch("/types/echo", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()
    assert not JobTypeSettings.objects.exists() and not AuditEntry.objects.exists()


@pytest.mark.parametrize("name", ["nope", "..", "echo%2F..", "%2e%2e", "jobs.handlers.echo.echo", "a" * 200])
def test_unknown_types_are_404(api, name):
    assert api.patch(f"/types/{name}", {"paused": True}, format="json").status_code == 404
    assert api.get(f"/types/{name}").status_code == 404
    assert not JobTypeSettings.objects.exists()


def test_read_key_reads_but_cannot_patch_or_pause(anon):
    reader = key_client("read")
    assert reader.get("/types").status_code == 200
    assert reader.get("/queues").status_code == 200
    assert reader.patch("/types/echo", {"paused": True}, format="json").status_code == 403
    assert reader.post("/queues/default/pause").status_code == 403
    writer = key_client("write")
    assert writer.patch("/types/echo", {"paused": True}, format="json").status_code == 403
    assert writer.post("/queues/default/pause").status_code == 403
    assert anon.get("/types").status_code == 401
    assert anon.post("/queues/default/pause").status_code == 401
    assert not QueueState.objects.filter(paused=True).exists() and not JobTypeSettings.objects.exists()


# ----------------------------------------------------------------------------- /queues


def test_queues_lists_each_configured_queue(api, settings, submit):
    submit({"type": "echo", "payload": {"message": "hi"}})
    queues = by_name(api.get("/queues").json())
    assert list(queues) == list(settings.SENTINELFLOW_QUEUES)
    default = queues["default"]
    assert default["depth"] == 1 and default["paused"] is False and default["workers"] == 0
    assert default["oldest_age_seconds"] is not None and default["oldest_age_seconds"] >= 0


def test_pause_and_resume_a_queue_are_audited(api):
    response = api.post("/queues/default/pause")
    assert response.status_code == 200 and response.json()["paused"] is True
    assert by_name(api.get("/queues").json())["default"]["paused"] is True
    assert api.post("/queues/default/resume").json()["paused"] is False
    entries = list(AuditEntry.objects.filter(target="default").values_list("action", "detail"))
    assert entries == [("queue.resume", {"was_paused": True}), ("queue.pause", {"was_paused": False})]


@pytest.mark.parametrize("name", ["nope", "..", "%2e%2e", "default%00", "DEFAULT", "x" * 200])
def test_queues_not_configured_are_404(api, name):
    assert api.post(f"/queues/{name}/pause").status_code == 404
    assert not QueueState.objects.exists() and not AuditEntry.objects.exists()


# ----------------------------------------------------------------------------- the worker


def test_a_paused_queue_keeps_its_jobs_and_resume_runs_them(api, submit, run_worker):
    ids = [submit({"type": "echo", "payload": {"message": str(n)}})["job_id"] for n in range(3)]
    api.post("/queues/default/pause")
    services.forget_flow_state()
    run_worker()
    assert set(Job.objects.filter(job_id__in=ids).values_list("status", flat=True)) == {"queued"}
    assert redis_store.connection().llen(redis_store.queue("default").key) == 3
    api.post("/queues/default/resume")
    services.forget_flow_state()
    run_worker()
    assert set(Job.objects.filter(job_id__in=ids).values_list("status", flat=True)) == {"succeeded"}


def test_a_paused_type_is_held_not_failed_and_the_sentinel_leaves_it(api, submit, run_worker):
    from jobs.sentinel import Sentinel

    job_id = submit({"type": "echo", "payload": {"message": "wait"}})["job_id"]
    api.patch("/types/echo", {"paused": True}, format="json")
    services.forget_flow_state()
    run_worker()
    job = Job.objects.get(job_id=job_id)
    assert job.status == "queued" and job.attempts == 0
    queue = redis_store.queue("default")
    assert queue.scheduled_job_registry.get_job_ids() == [job_id]
    assert by_name(api.get("/types").json())["echo"]["held"] == 1
    # The sentinel sees a scheduled RQ job in its registry, with no lease: not lost.
    assert Sentinel(sleep=lambda seconds: None)._diagnose([job], _members()) == []
    metric = api.get("/metrics").content.decode()
    assert 'jobs_held_total{reason="paused",type="echo"} 1.0' in metric
    assert 'jobs_type_paused{type="echo"} 1.0' in metric


def _members():
    from jobs.sentinel import QueueMembers

    return QueueMembers(redis_store.connection())


def test_types_without_limits_never_ask_the_limiter(submit, run_worker, monkeypatch):
    from jobs.worker import limits

    def refuse(*args, **kwargs):
        raise AssertionError("the limiter was asked about a type without limits")

    monkeypatch.setattr(limits, "acquire", refuse)
    job_id = submit({"type": "echo", "payload": {"message": "fast"}})["job_id"]
    run_worker()
    assert Job.objects.get(job_id=job_id).status == "succeeded"


def test_a_run_held_by_a_limit_keeps_its_row_and_frees_its_lease(api, submit, run_worker, monkeypatch):
    from jobs.worker import limits

    api.patch("/types/echo", {"max_concurrency": 1}, format="json")
    services.forget_flow_state()
    monkeypatch.setattr(
        limits, "acquire", lambda *args: limits.Decision(go=False, reason="concurrency", retry_after=30)
    )
    job_id = submit({"type": "echo", "payload": {"message": "wait"}})["job_id"]
    run_worker()
    job = Job.objects.get(job_id=job_id)
    assert (job.status, job.attempts, job.started_at) == ("queued", 0, None)
    connection = redis_store.connection()
    assert not connection.exists(redis_store.lease_key(job_id))
    assert connection.hget(f"rq:job:{job_id}", "status") == b"scheduled"
    assert redis_store.queue("default").scheduled_job_registry.get_job_ids() == [job_id]


def test_a_limiter_failure_leaves_the_job_to_the_sentinel(api, submit, run_worker, monkeypatch):
    from redis.exceptions import ResponseError

    from jobs.worker import limits

    api.patch("/types/echo", {"rate": "5/s"}, format="json")
    services.forget_flow_state()

    def broken(*args):
        raise ResponseError("NOSCRIPT or worse")

    monkeypatch.setattr(limits, "acquire", broken)
    job_id = submit({"type": "echo", "payload": {"message": "x"}})["job_id"]
    lease = redis_store.leases
    run_worker()
    job = Job.objects.get(job_id=job_id)
    assert (job.status, job.attempts) == ("queued", 0)
    # Not refreshed any more: the lease lapses, and the sentinel restores the job.
    assert redis_store.lease_key(job_id) not in lease._held.values()


def test_a_run_frees_its_slot_before_the_next_job_of_its_batch_asks(api, submit, run_worker, monkeypatch):
    """One worker, one batch of five jobs of a type with max_concurrency 1: each run's slot is freed with its
    outcome, so the batch's next job gets it; none is held back by a slot its own batch still held."""
    from jobs.worker import limits

    api.patch("/types/echo", {"max_concurrency": 1}, format="json")
    services.forget_flow_state()
    holders: set[str] = set()
    asked: list[bool] = []

    def acquire(client, policy, job, job_id):
        free = not holders
        asked.append(free)
        if not free:
            return limits.Decision(go=False, reason="concurrency", retry_after=30)
        holders.add(job_id)
        return limits.Decision(go=True, slot_key="slots:echo")

    def release(pipe, slot_key, job_id):
        if slot_key:
            holders.discard(job_id)

    monkeypatch.setattr(limits, "acquire", acquire)
    monkeypatch.setattr(limits, "release", release)
    ids = [submit({"type": "echo", "payload": {"message": str(n)}})["job_id"] for n in range(5)]
    run_worker()
    assert asked == [True] * 5
    assert set(Job.objects.filter(job_id__in=ids).values_list("status", flat=True)) == {"succeeded"}
