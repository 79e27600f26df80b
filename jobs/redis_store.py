"""The one Redis connection of a process, the RQ queues on it, and the leases of running jobs.

django-rq is configured (RQ_QUEUES with USE_REDIS_CACHE) to share the
django-redis cache's connection pool, so the queues, the cache and the
metrics all follow REDIS_URL (or fakeredis when TESTING=1).
"""

from __future__ import annotations

import logging
import secrets
import threading

import django_rq
from django.conf import settings
from django_redis import get_redis_connection
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError
from redis.retry import Retry
from rq import Queue

logger = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- job leases

# A run holds the lease of its job while it runs: a key refreshed every LEASE_REFRESH seconds that
# expires LEASE_TTL seconds after the process stops refreshing it (SIGKILL, OOM kill, lost host). The
# sentinel re-runs a started job whose lease is gone. RQ's own liveness signals are far slower (a
# worker key lives worker_ttl + 60 = 480 s by default, 90 s during a job), and they describe the
# worker's main process, not the work horse that actually runs the job.
LEASE_TTL = 10
LEASE_REFRESH = 2.0
LEASE_PREFIX = "sentinelflow:lease:"


def lease_key(job_id: str) -> str:
    return f"{LEASE_PREFIX}{job_id}"


class JobLease:
    """`with JobLease(job_id):` holds the job's lease while the block runs.

    A daemon thread refreshes the key, so a handler that blocks (sleeps, waits on I/O) keeps it.
    Redis errors are logged and retried at the next refresh: losing Redis must not fail the job.
    Two runs of one job (a duplicate delivery) share the key; each deletes it only if it holds
    the last token written, and the other run writes it again at its next refresh.
    """

    def __init__(self, job_id: str, *, ttl: int | None = None, refresh: float | None = None) -> None:
        self.key = lease_key(job_id)
        self.token = secrets.token_hex(8)
        self.ttl = ttl or LEASE_TTL
        self.refresh = refresh or LEASE_REFRESH
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> JobLease:
        self._write()
        self._thread = threading.Thread(target=self._keep, name=f"lease {self.key}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.refresh + 1)
        try:
            compare_and_delete(connection(), self.key, self.token)
        except RedisError as error:
            logger.warning("lease %s not released (it expires in %s s): %s", self.key, self.ttl, error)

    def _keep(self) -> None:
        while not self._stop.wait(self.refresh):
            self._write()

    def _write(self) -> None:
        try:
            connection().set(self.key, self.token, ex=self.ttl)
        except RedisError as error:
            logger.warning("lease %s not refreshed: %s", self.key, error)


def compare_and_delete(client: Redis, key: str, token: str) -> bool:
    """Delete `key` only while it still holds `token` (WATCH/MULTI: no Lua needed, so fakeredis runs it too)."""
    with client.pipeline() as pipe:
        try:
            pipe.watch(key)
            if pipe.get(key) != token.encode():
                pipe.unwatch()
                return False
            pipe.multi()
            pipe.delete(key)
            pipe.execute()
            return True
        except WatchError:
            return False  # it changed meanwhile: someone else holds it now
