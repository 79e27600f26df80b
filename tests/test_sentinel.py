"""The sentinel (jobs/sentinel.py, `manage.py sentinel`) and the job lease it reads, on fakeredis.

A run lost mid-way is simulated as what a SIGKILL leaves behind: the RQ job off its queue, the row
`started` by services.job_start, and no process holding the job's lease.
"""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from rest_framework import serializers
from rq.job import Job as RQJob

from jobs import metrics, redis_store, sentinel, services
from jobs.exceptions import InvalidTransition
from jobs.handlers import REGISTRY, JobType
from jobs.models import Job, JobStatus
from jobs.sentinel import LOCK_KEY, Sentinel
from tests.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_grace(monkeypatch):
    """Jobs count as lost at once: no grace after a write, no wait before the second look."""
    monkeypatch.setattr(sentinel, "RESTORE_GRACE", timedelta(0))


def run_pass(sleep=lambda seconds: None) -> sentinel.PassReport | None:
    return Sentinel(sleep=sleep).run_pass()


def pending_job(**fields) -> Job:
    return make_job(**{"payload": {"n": 1}, "status": JobStatus.PENDING, **fields})


def lost_run(job_id: str) -> Job:
    """What a worker killed mid-run leaves: its RQ job taken off the queue, the row `started`, no lease."""
    job = Job.objects.get(job_id=job_id)
    queue = redis_store.queue(job.queue)
    redis_store.connection().lrem(queue.key, 0, job_id)
    RQJob.fetch(job_id, connection=redis_store.connection()).set_status("started")
    return services.job_start(job_id=job_id, actor="worker:killed")


def rq_status(job_id: str) -> str | None:
    status = redis_store.connection().hget(RQJob.key_for(job_id), "status")
    return status.decode() if status else None


def queued_ids(name: str = "default") -> list[str]:
    return redis_store.queue(name).job_ids


# --------------------------------------------------------------------------- (a) pending jobs


def test_pending_job_is_enqueued_and_then_runs(run_worker, metric):
    job = pending_job()

    report = run_pass()

    assert (report.enqueued, report.recovered, report.restored) == (1, 0, 0)
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.enqueued_at is not None
    assert queued_ids() == [str(job.job_id)]
    assert metric("jobs_enqueued_total", type="echo", queue="default") == 1
    run_worker()
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)


def test_pending_job_due_later_is_scheduled_not_queued():
    job = pending_job(run_at=services.now() + timedelta(hours=1))

    run_pass()

    job.refresh_from_db()
    assert job.status == JobStatus.SCHEDULED
    assert queued_ids() == []
    assert str(job.job_id) in redis_store.queue("default").scheduled_job_registry.get_job_ids()


def test_pending_job_stays_pending_when_redis_refuses_the_enqueue(monkeypatch):
    job = pending_job()
    # Putting a job id on a queue (RQ's enqueue and the enqueue modelled on it both do) fails.
    monkeypatch.setattr(Pipeline, "rpush", _refuse)

    report = run_pass()

    assert report.enqueued == 0
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING


def _refuse(*args, **kwargs):
    raise RedisConnectionError("Redis is down")


# --------------------------------------------------------------------------- (b) lost runs


def test_started_job_whose_run_is_gone_is_queued_again_and_counted(submit, run_worker, metric):
    job_id = submit({"type": "echo", "payload": {"v": 1}})["job_id"]
    lost_run(job_id)

    report = run_pass()

    assert (report.recovered, report.failed) == (1, 0)
    job = Job.objects.get(job_id=job_id)
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 1)
    assert "Attempt 1 was lost" in job.error
    assert queued_ids() == [job_id] and rq_status(job_id) == "queued"
    assert metric("jobs_retried_total", type="echo", reason="recovered") == 1
    assert metric("jobs_enqueued_total", type="echo", queue="default") == 2
    assert job.events.last().actor == "sentinel"
    run_worker()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.result) == (JobStatus.SUCCEEDED, 2, {"v": 1})


def test_started_job_with_a_live_lease_is_left_alone_however_long_it_runs(submit, metric):
    job_id = submit({"type": "echo"})["job_id"]
    lost_run(job_id)
    Job.objects.filter(job_id=job_id).update(started_at=services.now() - timedelta(days=1))

    with redis_store.JobLease(job_id):
        report = run_pass()

    assert not report.acted
    assert Job.objects.get(job_id=job_id).status == JobStatus.STARTED
    assert metric("jobs_retried_total", type="echo", reason="recovered") == 0


def test_lost_run_is_left_alone_when_its_lease_is_back_at_the_second_look(submit):
    job_id = submit({"type": "echo"})["job_id"]
    lost_run(job_id)

    # As after a FLUSHALL under a running job: the run writes its lease again before the sentinel looks twice.
    report = run_pass(sleep=lambda seconds: redis_store.connection().set(redis_store.lease_key(job_id), "x", ex=10))

    assert report.recovered == 0
    assert Job.objects.get(job_id=job_id).status == JobStatus.STARTED


def test_lost_run_of_job_with_attempts_spent_fails_it(submit, metric):
    job_id = submit({"type": "echo", "max_retries": 0})["job_id"]
    lost_run(job_id)

    report = run_pass()

    assert (report.recovered, report.failed) == (0, 1)
    job = Job.objects.get(job_id=job_id)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 1)
    assert "No retries left" in job.error and job.finished_at is not None
    assert metric("jobs_failed_total", type="echo") == 1
    assert metric("jobs_retried_total", type="echo", reason="recovered") == 0


def test_budget_counts_lost_runs_like_failed_ones(submit):
    job_id = submit({"type": "echo", "max_retries": 1})["job_id"]
    lost_run(job_id)
    assert run_pass().recovered == 1
    lost_run(job_id)

    report = run_pass()

    assert report.failed == 1
    assert Job.objects.get(job_id=job_id).attempts == 2


def test_a_second_pass_does_not_recover_the_same_run_again(submit, metric):
    job_id = submit({"type": "echo"})["job_id"]
    lost_run(job_id)
    assert run_pass().recovered == 1

    again = run_pass()

    assert not again.acted
    assert queued_ids() == [job_id]
    assert metric("jobs_retried_total", type="echo", reason="recovered") == 1
    assert metric("jobs_enqueued_total", type="echo", queue="default") == 2


def test_recovering_the_same_lost_attempt_twice_is_refused(store_backend, submit):
    job_id = submit({"type": "echo"})["job_id"]
    seen = lost_run(job_id)
    services.job_recover(job=seen, reason="test")

    with pytest.raises(InvalidTransition):
        services.job_recover(job=seen, reason="test")


def test_a_run_given_up_for_lost_cannot_record_over_the_next_attempt(submit):
    job_id = submit({"type": "echo"})["job_id"]
    stale = lost_run(job_id)
    run_pass()
    services.job_start(job_id=job_id)  # attempt 2 is running

    assert services.job_succeed(job=stale, result="stale") is None
    assert services.job_fail_attempt(job=stale, error=RuntimeError("stale")) is None
    job = Job.objects.get(job_id=job_id)
    assert (job.status, job.attempts, job.result) == (JobStatus.STARTED, 2, None)


def test_started_job_whose_rq_job_is_gone_is_recovered(submit):
    job_id = submit({"type": "echo"})["job_id"]
    lost_run(job_id)
    redis_store.connection().delete(RQJob.key_for(job_id))

    assert run_pass().recovered == 1
    assert rq_status(job_id) == "queued"


# --------------------------------------------------------------------------- (c) jobs Redis lost


def test_queued_jobs_lost_by_flushall_are_restored_once_and_run_once(store_backend, submit, run_worker, metric):
    job_ids = [submit({"type": "echo", "payload": {"i": i}})["job_id"] for i in range(3)]
    redis_store.connection().flushall()

    report = run_pass()

    assert (report.restored, report.recovered, report.enqueued) == (3, 0, 0)
    assert sorted(queued_ids()) == sorted(job_ids)
    assert metric("jobs_enqueued_total", type="echo", queue="default") == 3  # the counters went with FLUSHALL
    assert not run_pass().acted
    run_worker()
    for job in Job.objects.all():
        assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
        assert job.events.filter(actor="sentinel (restored)").count() == 1


def test_jobs_updated_within_the_grace_period_are_not_restored(monkeypatch, submit):
    monkeypatch.setattr(sentinel, "RESTORE_GRACE", timedelta(seconds=30))
    job_id = submit({"type": "echo"})["job_id"]
    redis_store.connection().flushall()  # as if the push after the commit had not happened yet

    assert not run_pass().acted
    assert Job.objects.get(job_id=job_id).status == JobStatus.QUEUED


def test_queued_job_missing_from_its_queue_list_is_restored(submit):
    kept = submit({"type": "echo"})["job_id"]
    lost = submit({"type": "echo"})["job_id"]
    redis_store.connection().lrem(redis_store.queue("default").key, 0, lost)

    report = run_pass()

    assert report.restored == 1
    assert queued_ids() == [kept, lost]


def test_queued_job_in_the_intermediate_queue_is_not_restored(submit):
    submit({"type": "echo"})
    queue = redis_store.queue("default")
    redis_store.connection().lmove(queue.key, queue.intermediate_queue_key)

    assert not run_pass().acted


def test_lost_scheduled_job_is_restored_to_the_scheduled_registry(submit):
    job_id = submit({"type": "echo", "delay": 3600})["job_id"]
    redis_store.connection().flushall()

    assert run_pass().restored == 1

    registry = redis_store.queue("default").scheduled_job_registry
    assert registry.get_job_ids() == [job_id] and queued_ids() == []
    assert Job.objects.get(job_id=job_id).status == JobStatus.SCHEDULED


def test_lost_retrying_job_waits_out_its_backoff(submit):
    job_id = submit({"type": "echo"})["job_id"]
    run_at = services.now() + timedelta(minutes=5)
    Job.objects.filter(job_id=job_id).update(status=JobStatus.RETRYING, run_at=run_at, attempts=1)
    redis_store.connection().flushall()

    assert run_pass().restored == 1

    scheduled = redis_store.queue("default").scheduled_job_registry
    assert scheduled.get_job_ids() == [job_id] and queued_ids() == []
    assert scheduled.get_scheduled_time(job_id) >= run_at.replace(microsecond=0)


def test_job_taken_by_a_worker_that_died_before_running_it_is_restored(submit, run_worker):
    job_id = submit({"type": "echo"})["job_id"]
    redis_store.connection().lrem(redis_store.queue("default").key, 0, job_id)
    RQJob.fetch(job_id, connection=redis_store.connection()).set_status("started")

    assert run_pass().restored == 1
    run_worker()
    assert Job.objects.get(job_id=job_id).attempts == 1


def test_job_being_started_under_a_lease_is_left_alone(submit):
    job_id = submit({"type": "echo"})["job_id"]
    redis_store.connection().lrem(redis_store.queue("default").key, 0, job_id)

    with redis_store.JobLease(job_id):
        assert not run_pass().acted


def test_job_whose_first_run_crashed_before_recording_anything_is_restored(submit):
    job_id = submit({"type": "echo"})["job_id"]
    redis_store.connection().lrem(redis_store.queue("default").key, 0, job_id)
    RQJob.fetch(job_id, connection=redis_store.connection()).set_status("failed")  # e.g. the database was down

    assert run_pass().restored == 1
    assert rq_status(job_id) == "queued"


def test_restoring_a_job_that_changed_since_it_was_seen_is_refused(store_backend, submit):
    job_id = submit({"type": "echo"})["job_id"]
    seen_by_one, seen_by_another = Job.objects.get(job_id=job_id), Job.objects.get(job_id=job_id)
    services.job_restore(job=seen_by_one, reason="test")

    with pytest.raises(InvalidTransition):
        services.job_restore(job=seen_by_another, reason="test")
    assert queued_ids() == [job_id]


def test_terminal_jobs_are_never_touched(submit, run_worker):
    job_id = submit({"type": "echo"})["job_id"]
    run_worker()
    redis_store.connection().flushall()

    assert not run_pass().acted
    assert Job.objects.get(job_id=job_id).status == JobStatus.SUCCEEDED


# --------------------------------------------------------------------------- the lock


def test_a_pass_while_another_sentinel_holds_the_lock_does_nothing():
    job = pending_job()
    redis_store.connection().set(LOCK_KEY, "another sentinel", px=60_000)

    assert run_pass() is None

    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    assert redis_store.connection().get(LOCK_KEY) == b"another sentinel"


def test_the_lock_is_released_at_the_end_of_a_pass():
    pending_job()
    run_pass()

    assert redis_store.connection().exists(LOCK_KEY) == 0
    assert run_pass() is not None


def test_a_pass_that_lost_its_lock_stops_and_leaves_the_new_holder_alone(submit):
    job_id = submit({"type": "echo"})["job_id"]
    lost_run(job_id)

    def lock_taken_meanwhile(seconds):
        redis_store.connection().set(LOCK_KEY, "newcomer", px=60_000)

    report = run_pass(sleep=lock_taken_meanwhile)

    assert report.recovered == 0
    assert redis_store.connection().get(LOCK_KEY) == b"newcomer"


def test_a_sentinel_whose_release_failed_takes_its_lock_back_at_the_next_pass():
    one = Sentinel(sleep=lambda seconds: None)
    assert one._acquire()  # as if Redis had failed before the release at the end of that pass
    pending_job()

    report = one.run_pass()

    assert report is not None and report.enqueued == 1
    assert redis_store.connection().exists(LOCK_KEY) == 0


def test_a_stop_request_during_the_second_look_repairs_nothing(submit):
    job_id = submit({"type": "echo"})["job_id"]
    lost_run(job_id)

    assert not run_pass(sleep=lambda seconds: True).acted
    assert Job.objects.get(job_id=job_id).status == JobStatus.STARTED


# --------------------------------------------------------------------------- the lease


def test_a_run_holds_its_jobs_lease_while_its_handler_runs(monkeypatch, submit, run_worker):
    seen = {}

    def probe(payload, context):
        key = redis_store.lease_key(context.job_id)
        seen["ttl"] = redis_store.connection().ttl(key)
        return "ok"

    monkeypatch.setitem(REGISTRY, "probe", JobType(name="probe", run=probe, payload_serializer=serializers.Serializer))
    job_id = submit({"type": "probe"})["job_id"]

    run_worker()

    assert 0 < seen["ttl"] <= redis_store.LEASE_TTL
    assert Job.objects.get(job_id=job_id).status == JobStatus.SUCCEEDED
    # Once the outcome is durable the lease is no longer refreshed: it lapses within LEASE_TTL.
    assert 0 < redis_store.connection().ttl(redis_store.lease_key(job_id)) <= redis_store.LEASE_TTL
    assert not redis_store.leases._held


def test_a_lease_is_refreshed_while_held_and_released_only_by_its_holder():
    client = redis_store.connection()
    key = redis_store.lease_key("j1")
    keeper = redis_store.LeaseKeeper(ttl=5, refresh=0.05)
    with redis_store.JobLease("j1", keeper=keeper):
        client.expire(key, 1)
        deadline = time.monotonic() + 3  # a loaded machine may delay the refresh thread
        while client.ttl(key) <= 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.ttl(key) > 1  # written again by the keeper's thread
        client.hset(key, "a duplicate run's token", 1)
    assert client.hkeys(key) == [b"a duplicate run's token"]  # each run removes only its own field


def test_a_released_lease_is_no_longer_refreshed():
    client = redis_store.connection()
    key = redis_store.lease_key("j2")
    keeper = redis_store.LeaseKeeper(ttl=5, refresh=0.05)
    with redis_store.JobLease("j2", keeper=keeper):
        assert client.exists(key) == 1
    time.sleep(0.2)  # several refresh periods: a keeper still refreshing it would have written it back
    assert client.exists(key) == 0


def test_a_lease_rides_on_the_transitions_pipeline(submit):
    """Taking and releasing the lease add no round trip of their own: both go with the metrics."""
    job_id = submit({"type": "echo"})["job_id"]
    lease = redis_store.JobLease(job_id)
    sent = []
    with metrics.record() as batch:
        lease.take(via=lambda step: (sent.append("take"), batch.also(step)))
    assert redis_store.connection().exists(redis_store.lease_key(job_id)) == 1
    with metrics.record() as batch:
        lease.release(via=lambda step: (sent.append("release"), batch.also(step)))
    lease.release()  # a second release is a no-op
    assert sent == ["take", "release"]
    assert redis_store.connection().exists(redis_store.lease_key(job_id)) == 0


# --------------------------------------------------------------------------- the command


def test_command_once_prints_a_summary_of_what_it_did(monkeypatch):
    monkeypatch.setattr(sentinel, "CONFIRM_DELAY", 0)
    pending_job()
    out = io.StringIO()

    call_command("sentinel", "--once", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith(
        "sentinel: pass 1: enqueued 1 pending, recovered 0, failed 0 (attempts spent), restored 0"
    )
    assert lines[-1] == (
        "sentinel: stopped after 1 pass(es): enqueued 1, recovered 0, failed 0, restored 0, submitted 0 for schedules,"
        " pruned 0"
    )


def test_command_once_is_silent_about_a_pass_that_did_nothing():
    out = io.StringIO()

    call_command("sentinel", "--once", stdout=out)

    assert out.getvalue().splitlines() == [
        "sentinel: stopped after 1 pass(es): enqueued 0, recovered 0, failed 0, restored 0, submitted 0 for schedules,"
        " pruned 0"
    ]


def test_command_once_fails_when_redis_is_down(monkeypatch):
    monkeypatch.setattr(Sentinel, "run_pass", lambda self: _refuse())

    with pytest.raises(CommandError, match="Redis is down"):
        call_command("sentinel", "--once", stdout=io.StringIO())
