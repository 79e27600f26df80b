"""The one Redis connection of a process, and the RQ queues on it.

django-rq is configured (RQ_QUEUES with USE_REDIS_CACHE) to share the
django-redis cache's connection pool, so the queues, the cache and the
metrics all follow REDIS_URL (or fakeredis when TESTING=1).
"""

from __future__ import annotations

import django_rq
from django.conf import settings
from django_redis import get_redis_connection
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue


def connection() -> Redis:
    return get_redis_connection("default")


def queue(name: str) -> Queue:
    return django_rq.get_queue(name, connection=connection())


def queues() -> list[Queue]:
    """All queues in priority order, as workers drain them."""
    return [queue(name) for name in settings.SENTINELFLOW_QUEUES]


_probe_client: Redis | None = None
PROBE_TIMEOUT = 0.5


def probe_connection() -> Redis:
    """A client with short timeouts and no retries, for health checks that must answer fast."""
    global _probe_client
    if settings.TESTING:
        return connection()
    if _probe_client is None:
        _probe_client = Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=PROBE_TIMEOUT,
            socket_connect_timeout=PROBE_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
    return _probe_client
