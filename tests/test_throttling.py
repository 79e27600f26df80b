"""The throttles: DRF's sliding window kept in Redis, and requests let through while Redis is down
(a submit is stored as pending, never a 500)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis
from django.core.cache import cache
from redis.backoff import NoBackoff
from redis.retry import Retry
from rest_framework.throttling import SimpleRateThrottle

from jobs import redis_store
from jobs.authentication import ApiPrincipal
from jobs.models import Job, JobStatus
from jobs.throttling import ApiKeyRateThrottle

pytestmark = pytest.mark.django_db(transaction=True)


def test_submit_with_redis_down_for_the_throttle_too_is_201_pending(api, monkeypatch):
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(redis_store, "connection", lambda: dead)

    def refuse(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(cache, "get", refuse)
    monkeypatch.setattr(cache, "set", refuse)

    response = api.post("/jobs", {"type": "echo"}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["status"] == JobStatus.PENDING
    assert Job.objects.get().status == JobStatus.PENDING


class _DictCache:
    def __init__(self) -> None:
        self.data: dict = {}

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, key, value, timeout=None):
        self.data[key] = value


@pytest.mark.parametrize("rate", ["3/s", "5/min", "1/h"])
def test_the_redis_window_answers_as_drfs_own_throttle(monkeypatch, rate):
    """Same requests at the same moments: same answers and same waits as DRF's cache-based throttle."""
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"api_key": rate, "anon": rate})
    clock = [1_000.0]
    monkeypatch.setattr(SimpleRateThrottle, "timer", staticmethod(lambda: clock[0]))

    class DrfThrottle(SimpleRateThrottle):
        scope = "api_key"
        cache = _DictCache()

        def get_cache_key(self, request, view):
            return "same key"

    request = SimpleNamespace(user=ApiPrincipal(name="throttled"))
    _, duration = SimpleRateThrottle.parse_rate(None, rate)
    steps = [0, 0, 0.1, 0.2, 0.2, 0.3, duration * 0.5, duration * 0.4, duration * 0.2, 0, duration * 1.5, 0.01, 0]
    answers = []
    for step in steps:
        clock[0] += step
        ours, theirs = ApiKeyRateThrottle(), DrfThrottle()
        allowed = ours.allow_request(request, None)
        assert allowed == theirs.allow_request(request, None), answers
        answers.append(allowed)
        if not allowed:
            assert ours.wait() == pytest.approx(theirs.wait())
    assert True in answers and False in answers


def test_refused_requests_do_not_count_and_the_budget_comes_back(monkeypatch, api):
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"api_key": "2/min", "anon": "100/s"})
    clock = [5_000.0]
    monkeypatch.setattr(SimpleRateThrottle, "timer", staticmethod(lambda: clock[0]))

    def post() -> tuple[int, str | None]:
        response = api.post("/jobs", {"type": "echo"}, format="json")
        return response.status_code, response.headers.get("Retry-After")

    assert [post(), post(), post()] == [(201, None), (201, None), (429, "60")]
    clock[0] += 30
    assert post() == (429, "30")  # the refused requests did not restart the window
    clock[0] += 30.5
    assert post() == (201, None)
    assert Job.objects.count() == 3
