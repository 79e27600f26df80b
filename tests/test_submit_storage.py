"""How services.job_submit and job_submit_batch store and enqueue: PostgreSQL's single statement, the
ORM path of other databases, and the RQ writes of a batch. Every test runs on the database the suite
runs on, once per store backend it has (`store_backend`: the ORM one, and on PostgreSQL the
single-statement one too), so that the two are compared there."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, transaction
from rq.utils import utcparse

from jobs import redis_store, services, store
from jobs.models import Job, JobEvent, JobStatus
from jobs.services import enqueue, submission, transitions
from jobs.store.orm import OrmStore
from jobs.tasks import run_job

pytestmark = pytest.mark.django_db(transaction=True)

ON_POSTGRES = connection.vendor == "postgresql"
needs_postgres = pytest.mark.skipif(not ON_POSTGRES, reason="the single-statement path is PostgreSQL's")
ITEMS = [
    {"type": "echo", "payload": {"n": 1, "text": "é\"'\\\n{}", "deep": [{"a": None}, 1.5, True, 10**20]}},
    {"type": "echo", "payload": {}, "queue": "high", "max_retries": 0, "timeout": 7},
    {"type": "sleep", "payload": {"seconds": 0.5}, "queue": "low", "max_retries": 100, "timeout": 86_400},
]
ACTOR = "api-key:test"


@pytest.fixture
def fixed_now(monkeypatch):
    moment = services.now()
    monkeypatch.setattr(transitions, "now", lambda: moment)
    return moment


def submit_one(key: str | None = None, **item) -> tuple[Job, bool]:
    return services.job_submit(**(item or ITEMS[0]), submitted_by=ACTOR, idempotency_key=key, fingerprint="f" * 64)


def submit_batch(key: str | None = None, *, run_at=None) -> tuple[list[Job], bool]:
    items = [dict(item) for item in ITEMS]
    if run_at is not None:
        items[1]["run_at"] = run_at
    return services.job_submit_batch(items=items, submitted_by=ACTOR, idempotency_key=key, fingerprint="f" * 64)


def stored(job: Job) -> tuple[dict, list[tuple]]:
    """A stored job's columns, less its ids, key and write time; and its timeline."""
    row = Job.objects.filter(pk=job.pk).values().get()
    for name in ("id", "job_id", "idempotency_key", "updated_at"):
        row.pop(name)
    events = list(JobEvent.objects.filter(job_id=job.pk).values_list("at", "from_status", "to_status", "actor"))
    return row, events


@needs_postgres
def test_postgresql_stores_a_submit_as_the_orm_does(monkeypatch, fixed_now):
    fast, _ = submit_one("one")
    with monkeypatch.context() as patch:
        patch.setattr(store, "_backend", OrmStore())
        slow, _ = submit_one("two")

    assert stored(fast) == stored(slow)
    assert stored(fast)[1] == [(fixed_now, "", JobStatus.QUEUED, ACTOR)]
    assert Job.objects.get(pk=fast.pk).updated_at == fast.updated_at >= fixed_now


@needs_postgres
def test_postgresql_stores_a_batch_as_the_orm_does(monkeypatch, fixed_now):
    run_at = fixed_now + timedelta(hours=1, microseconds=7)
    fast, _ = submit_batch("one", run_at=run_at)
    with monkeypatch.context() as patch:
        patch.setattr(store, "_backend", OrmStore())
        slow, _ = submit_batch("two", run_at=run_at)

    assert [stored(job) for job in fast] == [stored(job) for job in slow]
    assert [job.status for job in fast] == [JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.QUEUED]
    assert Job.objects.get(pk=fast[1].pk).run_at == run_at
    assert [Job.objects.get(pk=job.pk).updated_at for job in fast] == [job.updated_at for job in fast]


def test_a_batch_is_stored_in_order_with_one_event_each(store_backend):

    jobs, created = submit_batch("order")

    assert created
    assert [job.pk for job in Job.objects.order_by("id")] == [job.pk for job in jobs]  # ids follow the order given
    assert [job.idempotency_key for job in Job.objects.order_by("id")] == ["order#0", "order#1", "order#2"]
    for job, item in zip(jobs, ITEMS, strict=True):
        row = Job.objects.get(pk=job.pk)
        assert (row.job_id, row.type, row.payload, row.queue) == (job.job_id, item["type"], item["payload"], job.queue)
        assert not job._state.adding
    assert sorted(JobEvent.objects.values_list("job_id", flat=True)) == [job.pk for job in jobs]


@pytest.mark.parametrize(
    ("submit", "lookup"), [(submit_one, "_job_for_idempotency_key"), (submit_batch, "_jobs_for_batch_key")]
)
def test_a_key_another_request_stored_meanwhile_returns_its_jobs(store_backend, monkeypatch, submit, lookup):
    """Two requests race with one Idempotency-Key: the unique constraint refuses the second INSERT."""
    first, _ = submit("race")
    stored_lookup = getattr(submission, lookup)
    calls = []

    def not_seen_at_first(*args):
        calls.append(args)
        return None if len(calls) == 1 else stored_lookup(*args)

    monkeypatch.setattr(submission, lookup, not_seen_at_first)

    again, created = submit("race")

    def pks(jobs):
        return [job.pk for job in jobs] if isinstance(jobs, list) else [jobs.pk]

    assert (pks(again), created, len(calls)) == (pks(first), False, 2)
    assert Job.objects.count() == JobEvent.objects.count() == len(pks(first))
    enqueued = sorted(job_id for queue in redis_store.queues() for job_id in queue.job_ids)
    assert enqueued == sorted(str(job.job_id) for job in (first if isinstance(first, list) else [first]))  # once each


def test_inside_a_transaction_the_jobs_are_enqueued_at_its_commit_and_a_refused_insert_spares_it(store_backend):
    first, _ = submit_one("k")
    queue = redis_store.queue("default")

    with transaction.atomic():
        second, created = submit_one("k2")
        assert queue.job_ids == [str(first.job_id)]  # not before the commit
        # A repeated key inside the transaction: the refused INSERT rolls back to its savepoint only.
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            submission.insert_jobs(
                [
                    submission.new_job(
                        ITEMS[0], submitted_at=services.now(), submitted_by=ACTOR, idempotency_key="k", fingerprint=""
                    )
                ],
                at=services.now(),
                actor=ACTOR,
            )
        assert Job.objects.count() == 2  # the transaction is still usable

    assert created
    assert queue.job_ids == [str(first.job_id), str(second.job_id)]


@pytest.mark.parametrize("enqueued_before_on", [(), ("default",), ("high", "default", "low")])
def test_submits_write_to_redis_what_rq_writes_job_by_job(enqueued_before_on):
    """Batches and single submits write, for every job, the hash and queue entries RQ would write: whether
    this process has enqueued on the job's queue before (RQ's hash of that job is then the template) or not."""
    client = redis_store.connection()
    enqueue._templates.clear()
    for queue in enqueued_before_on:
        submit_one(type="echo", payload={}, queue=queue)
    assert len(enqueue._templates) == len(enqueued_before_on)
    client.flushall()
    jobs, _ = submit_batch()
    more, _ = services.job_submit_batch(
        items=[{"type": "echo", "payload": {"n": n}, "timeout": 10 + n} for n in range(4)], submitted_by=ACTOR
    )
    singles = [submit_one(**item)[0] for item in ITEMS]
    submitted = [*jobs, *more, *singles]
    ours = {str(job.job_id): client.hgetall(f"rq:job:{job.job_id}") for job in submitted}
    queues = {name: redis_store.queue(name).job_ids for name in ("high", "default", "low")}
    listed = client.smembers("rq:queues")
    client.flushall()

    for job in submitted:  # as RQ alone enqueues each one
        queue = redis_store.queue(job.queue)
        rq_job = queue.create_job(
            run_job,
            args=(str(job.job_id),),
            job_id=str(job.job_id),
            timeout=job.timeout,
            result_ttl=settings.SENTINELFLOW_RQ_RESULT_TTL,
            failure_ttl=settings.SENTINELFLOW_RQ_RESULT_TTL,
            description=f"{job.type} {job.job_id}",
        )
        queue.enqueue_job(rq_job)

    assert {name: redis_store.queue(name).job_ids for name in queues} == queues
    assert client.smembers("rq:queues") == listed == {b"rq:queue:default", b"rq:queue:high", b"rq:queue:low"}
    for rq_id, written in ours.items():
        by_rq = client.hgetall(f"rq:job:{rq_id}")
        # Jobs enqueued together share one time; RQ stamps each with its own. Both in RQ's format.
        for field in (b"created_at", b"enqueued_at"):
            assert utcparse(written.pop(field).decode()) and utcparse(by_rq.pop(field).decode())
        assert written == by_rq, rq_id
