"""GET /healthz and /readyz."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobs import redis_store

pytestmark = pytest.mark.django_db(transaction=True)


def test_healthz_is_ok_without_auth(anon):
    for path in ("/healthz", "/healthz/"):
        response = anon.get(path)
        assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_is_ok_when_database_and_redis_answer(anon):
    response = anon.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": {"status": "ok"}, "redis": {"status": "ok"}}


def test_readyz_is_503_naming_redis_when_it_is_down(anon, monkeypatch):
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(redis_store, "connection", lambda: dead)

    response = anon.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["redis"]["status"] == "error"
