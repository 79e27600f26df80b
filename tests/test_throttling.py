"""The throttles: DRF's sliding window kept in Redis, and requests let through while Redis is down
(a submit is stored as pending, never a 500)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from redis.backoff import NoBackoff
from redis.retry import Retry
from rest_framework.throttling import SimpleRateThrottle

from jobs import redis_store
from jobs.api.authentication import ApiPrincipal
from jobs.api.throttling import ApiKeyRateThrottle
from jobs.models import Job, JobStatus

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
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, "api_key": rate, "anon": rate}
    )
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
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, "api_key": "2/min", "anon": "100/s"}
    )
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


def anon_statuses(client, count: int, **headers) -> list[int]:
    return [client.get("/jobs", **headers).status_code for _ in range(count)]


def test_made_up_forwarded_for_does_not_give_a_fresh_budget(monkeypatch, anon, settings):
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, "api_key": "100/s", "anon": "2/min"}
    )

    statuses = [anon.get("/jobs", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(3)]

    assert statuses == [200, 200, 429]


def test_forwarded_for_counts_with_num_proxies_and_only_from_trusted_proxies(monkeypatch, anon, settings):
    from rest_framework.settings import api_settings

    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, "api_key": "100/s", "anon": "1/min"}
    )
    monkeypatch.setattr(api_settings, "NUM_PROXIES", 1)
    assert [anon.get("/jobs", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(2)] == [200, 200]

    settings.SENTINELFLOW_TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]  # the test client is 127.0.0.1
    assert [anon.get("/jobs", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(2, 4)] == [200, 429]
    response = anon.get("/jobs", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="198.51.100.9")
    assert response.status_code == 200


def test_every_429_carries_retry_after_even_past_the_budget(monkeypatch, api):
    # Requests admitted side by side (6 threads) can leave more members in the window than the
    # budget: seed that state directly, as the concurrent requests would leave it.
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, "api_key": "5/min", "anon": "100/s"}
    )
    now = SimpleRateThrottle.timer()
    redis_store.connection().zadd(
        "sentinelflow:throttle:api_key:bootstrap", {f"{now!r}:{n}": now - n * 0.01 for n in range(9)}
    )

    responses = [api.get("/jobs") for _ in range(3)]

    assert [response.status_code for response in responses] == [429, 429, 429]
    assert all(int(response.headers["Retry-After"]) >= 1 for response in responses)


def test_invalid_keys_are_throttled_before_the_database_is_asked(monkeypatch, anon):
    monkeypatch.setattr(
        SimpleRateThrottle,
        "THROTTLE_RATES",
        {**SimpleRateThrottle.THROTTLE_RATES, "api_key": "100/s", "anon": "100/s", "invalid_key": "3/min"},
    )
    anon.credentials(HTTP_X_API_KEY="sf_guess_wrong")

    assert anon_statuses(anon, 3) == [401, 401, 401]
    with CaptureQueriesContext(connection) as queries:
        response = anon.get("/jobs")

    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert not [query for query in queries.captured_queries if "jobs_apikey" in query["sql"]]


def test_invalid_key_budget_is_per_address_and_spares_the_bootstrap_key(monkeypatch, anon, api):
    monkeypatch.setattr(
        SimpleRateThrottle,
        "THROTTLE_RATES",
        {**SimpleRateThrottle.THROTTLE_RATES, "api_key": "100/s", "anon": "100/s", "invalid_key": "1/min"},
    )
    anon.credentials(HTTP_X_API_KEY="sf_guess_wrong")
    assert anon_statuses(anon, 2) == [401, 429]

    assert anon.get("/jobs", REMOTE_ADDR="127.0.0.2").status_code == 401
    assert api.get("/jobs").status_code == 200


def test_by_default_one_key_is_not_capped_and_the_throttle_skips_redis(monkeypatch, api):
    """THROTTLE_RATE_KEY is opt-in: a single client may submit as fast as the server serves."""
    assert SimpleRateThrottle.THROTTLE_RATES["api_key"] is None
    monkeypatch.setattr(SimpleRateThrottle, "timer", staticmethod(lambda: 7_000.0))  # every request at one instant
    request = SimpleNamespace(user=ApiPrincipal(name="busy-service"))

    def no_redis():
        raise AssertionError("the per-key throttle touched Redis without a budget")

    monkeypatch.setattr(redis_store, "connection", no_redis)
    assert all(ApiKeyRateThrottle().allow_request(request, None) for _ in range(1_000))


def test_by_default_requests_without_a_key_stay_limited(monkeypatch, anon):
    monkeypatch.setattr(SimpleRateThrottle, "timer", staticmethod(lambda: 8_000.0))
    assert SimpleRateThrottle.THROTTLE_RATES["anon"] == "20/s"
    assert anon_statuses(anon, 21) == [200] * 20 + [429]


@pytest.mark.parametrize(("value", "expected"), [("", "None"), ("250/s", "250/s")])
def test_throttle_rate_key_is_read_from_the_environment(value, expected):
    env = {"PATH": os.environ["PATH"], "TESTING": "1", "THROTTLE_RATE_KEY": value, "ENV_FILE": os.devnull}
    code = "from django.conf import settings; print(settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['api_key'])"
    out = django_shell(code, env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_a_malformed_throttle_rate_key_stops_the_start():
    env = {"PATH": os.environ["PATH"], "TESTING": "1", "THROTTLE_RATE_KEY": "lots", "ENV_FILE": os.devnull}
    out = django_shell("import django; django.setup()", env)
    assert out.returncode != 0
    assert "THROTTLE_RATE_KEY must look like 100/s" in out.stderr


def django_shell(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    env = env | {"DJANGO_SETTINGS_MODULE": "sentinelflow_site.settings"}
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60)
