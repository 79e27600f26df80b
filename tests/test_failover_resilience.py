"""A Redis failover ends neither the worker nor its scheduler: they carry on once a primary answers.

RQ's work loop quits on any error inside it (a READONLY from a demoted primary, a refused connection) and
RQ's scheduler process exits on its first Redis error; both are restarted in place instead.
"""

from __future__ import annotations

import pytest
import redis
from rq.scheduler import RQScheduler

from jobs import redis_store
from jobs.worker import FailoverProofScheduler, Worker

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_worker_resumes_when_its_loop_quits_on_an_error_while_redis_answers(monkeypatch):
    worker = Worker(redis_store.queues(), connection=redis_store.connection())
    monkeypatch.setattr("jobs.worker.workers.REDIS_RETRY_SECONDS", 0.01)
    names = []

    def rq_loop(self, *args, **kwargs):
        names.append(self.name)
        if len(names) == 1:
            return False  # the loop logged "found an unhandled exception, quitting"
        if len(names) == 2:
            raise redis.ReadOnlyError("You can't write against a read only replica.")
        self._stop_requested = True
        return True

    monkeypatch.setattr(Worker, "_work_batches", rq_loop)

    assert worker.work(burst=False) is True
    assert len(names) == 3
    assert len(set(names)) == 3  # each restart registers under a fresh name


def test_a_worker_asked_for_a_bounded_run_still_returns_when_its_loop_ends(monkeypatch):
    worker = Worker(redis_store.queues(), connection=redis_store.connection())
    runs = []
    monkeypatch.setattr(Worker, "_work_batches", lambda self, *a, **k: runs.append(1) or False)

    assert worker.work(burst=False, max_jobs=5) is False
    assert runs == [1]


def test_the_scheduler_process_carries_on_through_redis_errors(monkeypatch):
    scheduler = FailoverProofScheduler(["default"], connection=redis_store.connection())
    monkeypatch.setattr("jobs.worker.workers.REDIS_RETRY_SECONDS", 0.01)
    attempts = []

    def rq_scheduler_loop(self):
        attempts.append(1)
        if len(attempts) == 1:
            raise redis.ConnectionError("No master found for 'mymaster'")
        if len(attempts) == 2:
            raise redis.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(RQScheduler, "work", rq_scheduler_loop)

    scheduler.work()

    assert len(attempts) == 3


def test_the_worker_starts_the_failover_proof_scheduler(monkeypatch):
    worker = Worker(redis_store.queues(), connection=redis_store.connection())
    started = []
    monkeypatch.setattr(FailoverProofScheduler, "start", lambda self: started.append(type(self)))
    # RQ takes its locks with a Lua script, which fakeredis does not run.
    monkeypatch.setattr(FailoverProofScheduler, "acquire_locks", lambda self: self._acquired_locks.add("default"))

    worker._start_scheduler(False, "INFO")

    assert started == [FailoverProofScheduler]


def test_runstack_with_sentinels_asks_them_and_never_starts_an_embedded_redis(settings, monkeypatch):
    from django.core.management.base import CommandError

    from jobs.management.commands import runstack

    settings.REDIS_SENTINELS = [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
    settings.REDIS_SENTINEL_MASTER = "jobs"
    command = runstack.Command()
    monkeypatch.setattr(command, "_start_embedded_redis", lambda *a, **k: pytest.fail("started an embedded Redis"))
    monkeypatch.setattr(runstack, "sentinel_primary_answers", lambda: False)

    with pytest.raises(CommandError, match="no primary of 'jobs' answers through REDIS_SENTINELS"):
        command._redis({})

    monkeypatch.setattr(runstack, "sentinel_primary_answers", lambda: True)
    assert command._redis({}) == settings.REDIS_URL
    assert runstack.redis_description("redis://:pw@x/0") == (
        "primary of 'jobs' via the sentinels 10.0.0.1:26379, 10.0.0.2:26379"
    )


def test_the_probe_client_asks_the_sentinels_with_the_urls_database_and_password():
    from redis.sentinel import MasterNotFoundError

    from sentinelflow_site.redis_sentinel import primary_client

    client = primary_client("redis://app:p%40ss@ignored:6379/3", [("127.0.0.1", 1)], "jobs", "s-pass", timeout=0.2)

    pool = client.connection_pool
    assert pool.service_name == "jobs"
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (3, "p@ss")
    assert pool.connection_kwargs["username"] == "app"
    sentinel = pool.sentinel_manager.sentinels[0]
    assert sentinel.connection_pool.connection_kwargs["password"] == "s-pass"
    with pytest.raises(MasterNotFoundError):  # nothing answers on port 1: no sentinel, no primary
        client.ping()
