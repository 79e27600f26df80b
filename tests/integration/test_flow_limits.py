"""The limiter's Lua script against a real Redis (fakeredis runs no Lua): concurrency slots per limit_by
value, a slot whose run lost its lease, the GCRA rate with a burst of one, and the held set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from jobs import redis_store
from jobs.handlers.flow import Policy
from jobs.models import Job
from jobs.worker import limits

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    for key in connection.scan_iter(f"{redis_store.FLOW_PREFIX}*"):
        connection.delete(key)
    for key in connection.scan_iter(f"{redis_store.LEASE_PREFIX}flow-*"):
        connection.delete(key)
    connection.close()


def job(customer: str | None = None, timeout: int = 60) -> Job:
    return Job(type="report", payload={} if customer is None else {"customer": customer}, timeout=timeout)


def leased(client: redis.Redis, job_id: str) -> str:
    client.hset(redis_store.lease_key(job_id), "token", 1)
    return job_id


def test_concurrency_slots_per_limit_by_value(client):
    policy = Policy(name="report", max_concurrency=2, limit_by="customer")
    assert limits.acquire(client, policy, job("a"), leased(client, "flow-1")).go
    assert limits.acquire(client, policy, job("a"), leased(client, "flow-2")).go
    third = limits.acquire(client, policy, job("a"), leased(client, "flow-3"))
    assert not third.go and third.reason == "concurrency" and third.retry_after == limits.CONCURRENCY_RETRY
    assert limits.acquire(client, policy, job("b"), leased(client, "flow-4")).go  # another customer's own limit
    # The same run asking again (a duplicate delivery of a job holding its slot) keeps its slot.
    assert limits.acquire(client, policy, job("a"), "flow-1").go
    # One run ends: its slot is released with its outcome.
    decision = limits.acquire(client, policy, job("b"), leased(client, "flow-5"))
    assert decision.go and decision.slot_key
    pipe = client.pipeline()
    limits.release(pipe, limits.acquire(client, policy, job("a"), "flow-2").slot_key, "flow-2")
    pipe.execute()
    assert limits.acquire(client, policy, job("a"), "flow-3").go


def test_a_slot_whose_run_lost_its_lease_is_freed(client):
    policy = Policy(name="report", max_concurrency=1)
    assert limits.acquire(client, policy, job(), leased(client, "flow-dead")).go
    assert not limits.acquire(client, policy, job(), leased(client, "flow-next")).go
    client.delete(redis_store.lease_key("flow-dead"))  # the worker was killed: its lease lapsed
    assert limits.acquire(client, policy, job(), "flow-next").go


def test_rate_admits_one_run_per_interval(client):
    policy = Policy(name="report", rate="5/s")
    assert limits.acquire(client, policy, job(), "flow-r1").go
    second = limits.acquire(client, policy, job(), "flow-r2")
    assert not second.go and second.reason == "rate"
    assert 0 < second.retry_after <= 0.2


def test_a_paused_type_is_held_without_asking_redis(client):
    decision = limits.acquire(client, Policy(name="report", paused=True), job(), "flow-p")
    assert not decision.go and decision.reason == "paused"
