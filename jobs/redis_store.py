"""The one Redis connection of a process, the RQ queues on it, and the leases of running jobs.

django-rq is configured (RQ_QUEUES with USE_REDIS_CACHE) to share the
django-redis cache's connection pool, so the queues, the cache and the
metrics all follow REDIS_URL (or fakeredis when TESTING=1). With
REDIS_SENTINELS set, that pool is a Sentinel pool (settings.py,
sentinelflow_site/redis_sentinel.py): every user of `connection()` follows the
current primary through a failover without a restart.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable

import django_rq
from django.conf import settings
from django_redis import get_redis_connection
from redis import Redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.exceptions import RedisError, WatchError
from redis.retry import Retry
from rq import Queue

from sentinelflow_site.redis_sentinel import primary_client

logger = logging.getLogger(__name__)

# Adds commands to a pipeline that someone else sends.
PipelineStep = Callable[[Pipeline], object]


def connection() -> Redis:
    client: Redis = get_redis_connection("default")  # django-redis is untyped
    return client


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
        if settings.REDIS_SENTINELS:
            _probe_client = primary_client(
                settings.REDIS_URL,
                settings.REDIS_SENTINELS,
                settings.REDIS_SENTINEL_MASTER,
                settings.REDIS_SENTINEL_PASSWORD,
                timeout=PROBE_TIMEOUT,
            )
        else:
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


class LeaseKeeper:
    """Refreshes the leases this process holds, all of them in one pipeline, from one daemon thread.

    A lease is a hash with one field per run holding it: two runs of one job (a duplicate delivery)
    each add and remove only their own field, so no compare-and-delete is needed, and the key
    lives while any run refreshes it. The thread is started on first use in each process (a
    forked work horse gets its own). Redis errors are logged and retried at the next refresh:
    losing Redis must not fail a job.
    """

    def __init__(self, *, ttl: int = LEASE_TTL, refresh: float = LEASE_REFRESH) -> None:
        self.ttl = ttl
        self.refresh = refresh
        self._held: dict[str, str] = {}  # token -> key
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def write(self, pipe: Pipeline, key: str, token: str) -> None:
        pipe.hset(key, token, 1)
        pipe.expire(key, self.ttl)

    def hold(self, key: str, token: str) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a fork inherits the parent's leases, not the thread refreshing them
                self._pid, self._held, self._thread = os.getpid(), {}, None
            self._held[token] = key
            if self._thread is None:
                self._thread = threading.Thread(target=self._keep, name="job leases", daemon=True)
                self._thread.start()

    def drop(self, token: str) -> None:
        with self._lock:
            self._held.pop(token, None)

    def _keep(self) -> None:
        while True:
            time.sleep(self.refresh)
            with self._lock:
                if not self._held:
                    self._thread = None  # idle: the next hold starts a new thread
                    return
                held = list(self._held.items())
            try:
                with connection().pipeline(transaction=False) as pipe:
                    for token, key in held:
                        self.write(pipe, key, token)
                    pipe.execute()
            except RedisError as error:
                logger.warning("%d job lease(s) not refreshed: %s", len(held), error)


leases = LeaseKeeper()


class JobLease:
    """The lease of one run of a job: `take` it once the run is recorded as started, `release` it at the end.

    Either can ride on a pipeline the caller sends anyway (`via=batch.also`, the transition's
    metrics), so a lease costs no round trip of its own; without `via` each sends its own.
    """

    def __init__(self, job_id: str, *, keeper: LeaseKeeper | None = None) -> None:
        self.key = lease_key(job_id)
        self.token = secrets.token_hex(8)
        self.keeper = keeper or leases
        self.held = False

    def take(self, via: Callable[[PipelineStep], None] | None = None) -> None:
        # Kept from now on, even if this first write is lost with its pipeline.
        self.keeper.hold(self.key, self.token)
        self.held = True
        self._send(lambda pipe: self.keeper.write(pipe, self.key, self.token), via, "not written")

    def release(self, via: Callable[[PipelineStep], None] | None = None) -> None:
        if not self.held:
            return
        self.keeper.drop(self.token)
        self.held = False
        self._send(lambda pipe: pipe.hdel(self.key, self.token), via, f"not released (expires in {self.keeper.ttl} s)")

    def let_expire(self) -> None:
        """Stop refreshing the lease without deleting it: it expires within LEASE_TTL. For a run whose outcome
        is durable, where a lingering lease misleads no one (the sentinel only looks at unfinished jobs'
        leases) and the batch worker saves a command per job."""
        if self.held:
            self.keeper.drop(self.token)
            self.held = False

    def _send(self, step: PipelineStep, via: Callable[[PipelineStep], None] | None, failure: str) -> None:
        if via is not None:
            via(step)
            return
        try:
            with connection().pipeline(transaction=False) as pipe:
                step(pipe)
                pipe.execute()
        except RedisError as error:
            logger.warning("lease %s %s: %s", self.key, failure, error)

    def __enter__(self) -> JobLease:
        self.take()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def compare_and_delete(client: Redis, key: str, token: str) -> bool:
    """Delete `key` only while it still holds `token` (WATCH/MULTI: no Lua needed, so fakeredis runs it too)."""
    with client.pipeline() as pipe:
        try:
            pipe.watch(key)  # type: ignore[no-untyped-call]  # unannotated in redis-py
            if pipe.get(key) != token.encode():
                pipe.unwatch()
                return False
            pipe.multi()
            pipe.delete(key)
            pipe.execute()
            return True
        except WatchError:
            return False  # it changed meanwhile: someone else holds it now


# --------------------------------------------------------------------------- flow control keys

# jobs.worker.limits: a sorted set of the runs holding a concurrency slot (scored by when the slot lapses),
# a GCRA "theoretical arrival time" per rate limit, and per job type the jobs held back (scored by the
# time they wait until), counted by GET /types and the jobs_held gauge.
FLOW_PREFIX = "sentinelflow:flow:"
# A held job is held again each time it comes back while its limit still holds: one whose hold ended
# longer ago than this is back in its queue (or ran, or was cancelled) and no longer counts as held.
HELD_STALE_SECONDS = 5


def held_key(job_type: str) -> str:
    return f"{FLOW_PREFIX}held:{job_type}"


def held_counts(job_types: list[str], client: Redis | None = None) -> dict[str, int]:
    """How many jobs of each type a limit or a pause holds back now (one pipeline)."""
    client = client or connection()
    since = time.time() - HELD_STALE_SECONDS
    pipe = client.pipeline(transaction=False)
    for name in job_types:
        pipe.zcount(held_key(name), since, "+inf")
    return {name: int(count) for name, count in zip(job_types, pipe.execute(), strict=True)}
