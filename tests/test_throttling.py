"""The throttles let requests through while Redis is down: a submit is stored as pending, never a 500."""

from __future__ import annotations

import pytest
import redis
from django.core.cache import cache
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobs import redis_store
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
