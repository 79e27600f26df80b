"""jobs.worker.batches and jobs.services.runs: jobs taken in batches, one durable write per run, group commit."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rq import Queue

from jobs import redis_store, services
from jobs.handlers import REGISTRY, JobContext, job_type
from jobs.handlers.echo import EchoPayload
from jobs.models import Job, JobEvent, JobStatus
from jobs.store.records import RunOutcome
from jobs.worker import Worker, batches
from tests.factories import make_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("store_backend")]

S = JobStatus


def work() -> Worker:
    worker = Worker(redis_store.queues(), connection=redis_store.connection())
    worker.work(burst=True, logging_level="WARNING")
    return worker


@pytest.fixture
def slow_type():
    """A job type that runs for payload["seconds"]."""

    @job_type("slow", payload_serializer=EchoPayload)
    def slow(payload: dict, context: JobContext) -> dict:
        time.sleep(payload.get("seconds", 1))
        return {"slept": payload.get("seconds", 1)}

    yield
    REGISTRY.pop("slow")


def assert_leases_lapse() -> None:
    """Every lease taken is no longer refreshed and expires within LEASE_TTL (the rows are durable)."""
    client = redis_store.connection()
    keys = client.keys(f"{redis_store.LEASE_PREFIX}*")
    assert keys
    assert all(0 < client.ttl(key) <= redis_store.LEASE_TTL for key in keys)
    assert not redis_store.leases._held


def outcome_writes(queries: CaptureQueriesContext) -> int:
    """How many statements wrote an outcome (`... SET status = ...` of a started run, or the group statement)."""
    sqls = [query["sql"] for query in queries.captured_queries]
    return sum(1 for sql in sqls if "json_to_recordset" in sql and "recorded" in sql) + sum(
        1 for sql in sqls if sql.startswith("UPDATE") and '"finished_at"' in sql
    )


def test_a_batch_of_short_jobs_is_recorded_with_one_write_per_batch_not_two_per_job(submit, settings, store_backend):
    settings.SENTINELFLOW_WORKER_BATCH_SIZE = 50
    jobs = [submit({"type": "echo", "payload": {"n": n}}) for n in range(60)]

    with CaptureQueriesContext(connection) as queries:
        work()

    rows = {str(row.job_id): row for row in Job.objects.all()}
    assert {row.status for row in rows.values()} == {S.SUCCEEDED}
    assert all(rows[job["job_id"]].result == {"n": n} for n, job in enumerate(jobs))
    assert all(row.attempts == 1 and row.started_at <= row.finished_at for row in rows.values())
    if store_backend.name == "postgres":
        # The batch grows 1, 2, 4 ... 50: a handful of group writes for 60 jobs, not 120 single ones.
        assert outcome_writes(queries) <= 8, outcome_writes(queries)
    # Each job's timeline still shows both steps, at the run's own times.
    for row in rows.values():
        events = list(JobEvent.objects.filter(job=row).values_list("from_status", "to_status", "at", "actor"))
        assert [(source, target) for source, target, _at, _actor in events] == [
            ("", S.QUEUED),
            (S.QUEUED, S.STARTED),
            (S.STARTED, S.SUCCEEDED),
        ]
        assert events[1][2] == row.started_at and events[2][2] == row.finished_at
        assert events[2][3].startswith("worker:")


def test_the_batch_size_grows_with_short_jobs_up_to_the_setting(submit, settings):
    settings.SENTINELFLOW_WORKER_BATCH_SIZE = 8
    for n in range(40):
        submit({"type": "echo", "payload": {"n": n}})

    worker = work()

    assert worker.batch_size == 8
    assert Job.objects.filter(status=S.SUCCEEDED).count() == 40


def test_batch_counts_and_metrics_match_the_jobs(submit, metric, no_backoff):
    for n in range(5):
        submit({"type": "echo", "payload": {"n": n}})
    submit({"type": "fail", "max_retries": 1})

    work()

    assert metric("jobs_started_total", type="echo") == 5
    assert metric("jobs_succeeded_total", type="echo") == 5
    assert metric("jobs_started_total", type="fail") == 2  # the retry ran too: no backoff
    assert metric("jobs_retried_total", type="fail", reason="auto") == 1
    assert metric("jobs_failed_total", type="fail") == 1
    assert metric("job_duration_seconds_count", type="echo") == 5
    failed = Job.objects.get(type="fail")
    assert (failed.status, failed.attempts) == (S.FAILED, 2)
    # Retried at once (no backoff): from `retrying` straight to its next start, as with RQ's Retry.
    assert [e.to_status for e in failed.events.all()] == [S.QUEUED, S.STARTED, S.RETRYING, S.STARTED, S.FAILED]


def test_a_failed_attempt_with_backoff_waits_in_rqs_scheduled_registry(submit, settings):
    settings.SENTINELFLOW_RETRY_BACKOFF_BASE = 30
    job = submit({"type": "fail", "max_retries": 2})

    work()

    row = Job.objects.get(job_id=job["job_id"])
    assert (row.status, row.attempts) == (S.RETRYING, 1)
    assert row.run_at is not None and row.run_at > row.finished_at
    registry = redis_store.queue("default").scheduled_job_registry
    score = redis_store.connection().zscore(registry.key, job["job_id"])
    assert score is not None and score >= row.run_at.timestamp()
    assert redis_store.connection().hget(f"rq:job:{job['job_id']}", "status") == b"scheduled"
    assert_leases_lapse()


def test_a_long_run_shows_started_gives_back_the_rest_of_its_batch_and_writes_waiting_outcomes(
    submit, settings, slow_type, monkeypatch
):
    monkeypatch.setattr(batches.recorder, "after", 0.3)
    settings.SENTINELFLOW_WORKER_BATCH_SIZE = 10
    worker = Worker(redis_store.queues(), connection=redis_store.connection())
    worker.batch_size = 10  # as after a run of short jobs
    quick = submit({"type": "echo", "payload": {"first": True}})
    slow = submit({"type": "slow", "payload": {"seconds": 1.5}})
    after = [submit({"type": "echo", "payload": {"n": n}}) for n in range(3)]
    seen: dict[str, object] = {}

    def watch() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            row = Job.objects.get(job_id=slow["job_id"])
            if row.status == S.STARTED:
                seen["slow"] = row.status
                seen["quick"] = Job.objects.get(job_id=quick["job_id"]).status
                seen["queue"] = redis_store.connection().lrange(redis_store.queue("default").key, 0, -1)
                seen["rq_worker"] = redis_store.connection().hget(f"rq:job:{slow['job_id']}", "worker_name")
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    worker.work(burst=True, logging_level="WARNING")
    watcher.join()

    assert seen["slow"] == S.STARTED  # shown while it ran
    assert seen["quick"] == S.SUCCEEDED  # written without waiting for the slow one to end
    assert seen["queue"] == [job["job_id"].encode() for job in after]  # given back, in order
    assert seen["rq_worker"] == worker.name.encode()  # so that a cancel reaches this worker
    assert set(Job.objects.values_list("status", flat=True)) == {S.SUCCEEDED}
    slow_row = Job.objects.get(job_id=slow["job_id"])
    assert [e.to_status for e in slow_row.events.all()] == [S.QUEUED, S.STARTED, S.SUCCEEDED]
    assert slow_row.attempts == 1


def test_a_taken_job_that_is_no_longer_runnable_is_skipped_and_its_lease_released(submit):
    job = make_job(status=S.CANCELLED)
    # As if cancelled after it was pushed: its id is still in the queue.
    redis_store.connection().rpush(redis_store.queue("default").key, str(job.job_id))
    ran = submit({"type": "echo", "payload": {}})

    work()

    assert Job.objects.get(pk=job.pk).status == S.CANCELLED
    assert Job.objects.get(pk=job.pk).attempts == 0
    assert Job.objects.get(job_id=ran["job_id"]).status == S.SUCCEEDED
    assert_leases_lapse()


def test_an_rq_job_that_is_not_a_sentinelflow_job_is_run_by_rqs_own_code():
    queue = Queue("default", connection=redis_store.connection())
    rq_job = queue.enqueue("operator.add", 2, 3)

    work()

    rq_job.refresh()
    assert rq_job.get_status() == "finished"
    assert rq_job.return_value() == 5
    assert not Job.objects.exists()


def test_a_payload_naming_another_function_in_a_forged_rq_job_never_runs_as_a_sentinelflow_job(submit):
    """An RQ job whose data names run_job with another job's id is not taken for that job."""
    victim = submit({"type": "echo", "payload": {"v": 1}})
    queue = Queue("default", connection=redis_store.connection())
    # run_job with a different argument than its own id: RQ's code runs it, and run_job only runs runnable rows.
    forged = queue.enqueue(services.RUN_JOB, victim["job_id"], job_id="forged-id")

    work()

    row = Job.objects.get(job_id=victim["job_id"])
    assert (row.status, row.attempts) == (S.SUCCEEDED, 1)  # run once, not twice
    forged.refresh()
    assert forged.get_status() == "finished"


# ----------------------------------------------------------------------------- the store's group write


def outcome_for(job: Job, target: str = S.SUCCEEDED, *, recorded: bool = False, **changes) -> RunOutcome:
    now = services.now()
    return RunOutcome(
        job=job,
        attempt=job.attempts + (0 if recorded else 1),
        started_at=now,
        finished_at=now,
        target=target,
        actor="worker:test",
        start_recorded=recorded,
        runnable=sorted(services.RUNNABLE_STATUSES),
        changes=changes or {"result": {"ok": True}},
    )


def test_finish_runs_moves_only_the_rows_whose_compare_and_set_holds(store_backend):
    fresh, cancelled, started, restarted = (make_job() for _ in range(4))
    Job.objects.filter(pk=cancelled.pk).update(status=S.CANCELLED)
    Job.objects.filter(pk=started.pk).update(status=S.STARTED, attempts=1)
    started.refresh_from_db()
    Job.objects.filter(pk=restarted.pk).update(attempts=3)  # run again elsewhere meanwhile

    outcomes = [
        outcome_for(fresh),
        outcome_for(cancelled),
        outcome_for(started, S.FAILED, recorded=True, error="boom"),
        outcome_for(restarted),
    ]
    moved = store_backend.finish_runs(outcomes, stamp=services.now())

    assert moved == {fresh.pk, started.pk}
    fresh.refresh_from_db()
    assert (fresh.status, fresh.attempts, fresh.result) == (S.SUCCEEDED, 1, {"ok": True})
    started.refresh_from_db()
    assert (started.status, started.attempts, started.error) == (S.FAILED, 1, "boom")
    assert [e.to_status for e in started.events.all()] == [S.FAILED]  # its start was written before
    assert Job.objects.get(pk=cancelled.pk).status == S.CANCELLED
    assert Job.objects.get(pk=restarted.pk).status == S.QUEUED


def test_finish_runs_keeps_a_null_result_and_sets_run_at_only_when_given(store_backend):
    first, second = make_job(), make_job()
    due = services.now().replace(microsecond=0)
    outcomes = [
        outcome_for(first, result=None),
        outcome_for(second, S.RETRYING, error="again", run_at=due),
    ]

    assert store_backend.finish_runs(outcomes, stamp=services.now()) == {first.pk, second.pk}

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.result, first.run_at) == (S.SUCCEEDED, None, None)
    assert (second.status, second.error, second.run_at) == (S.RETRYING, "again", due)
