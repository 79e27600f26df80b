"""RQ plumbing: put jobs on their queues (or the scheduled registry) after the commit, take them off.

RQ is handed the dotted path of the entry point ("jobs.tasks.run_job"), not the function: that is the
name RQ stores in Redis either way, and services then never import the tasks that call them.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from rq.queue import Queue
from rq.utils import now as rq_now
from rq.utils import utcformat

from .. import metrics, redis_store
from ..exceptions import InvalidTransition
from ..models import Job
from . import transitions
from .transitions import S, transition

logger = logging.getLogger(__name__)

RUN_JOB = "jobs.tasks.run_job"
Counts = Sequence[tuple[str, tuple[str, ...]]]


def push(job: Job, *, counts: Counts = (), replace: bool = False) -> None:
    """Put one job on its RQ queue; see push_many."""
    push_many([job], counts=counts, replace=replace)


def push_many(jobs: list[Job], *, counts: Counts = (), replace: bool = False) -> None:
    """Put jobs on their RQ queues (or the scheduled registry), with their counters, in one round trip.

    With Redis down the rows go back to `pending`, and the sentinel enqueues them later: no job is lost.
    `replace` first removes an earlier RQ job of the same id (retries, restores), whose key may carry a TTL.
    """
    try:
        if replace:
            for job in jobs:
                delete_rq_job(str(job.job_id))
        batch = metrics.MetricsBatch()
        for name, labels in counts:
            batch.inc(name, *labels)
        listed: set[str] = set()  # queues whose name this pipeline adds to RQ's set of queues
        enqueued_at = utcformat(rq_now())  # jobs enqueued together share it, as their created_at
        with redis_store.connection().pipeline() as pipe:
            # MULTI first, as RQ's enqueue would start it: RQ refuses to start it after other commands.
            pipe.multi()
            for job in jobs:
                rq_id, description = str(job.job_id), f"{job.type} {job.job_id}"
                # A restored `retrying` job waits out the rest of its backoff; a `scheduled` one whose time
                # has passed is released by the scheduler at once.
                backoff_left = job.status == S.RETRYING and job.run_at is not None and job.run_at > transitions.now()
                # Set only when the job waits in the scheduled registry.
                run_at = job.run_at if job.status == S.SCHEDULED or backoff_left else None
                like_rq = _templates.get((job.queue, settings.SENTINELFLOW_RQ_RESULT_TTL)) if run_at is None else None
                if like_rq is not None:
                    if job.queue not in listed:
                        like_rq.list_queue(pipe)
                        listed.add(job.queue)
                    like_rq.enqueue(pipe, rq_id, description=description, timeout=job.timeout, at=enqueued_at)
                else:
                    queue = redis_store.queue(job.queue)
                    rq_job = queue.create_job(
                        RUN_JOB,
                        args=(rq_id,),
                        job_id=rq_id,
                        timeout=job.timeout,
                        result_ttl=settings.SENTINELFLOW_RQ_RESULT_TTL,
                        failure_ttl=settings.SENTINELFLOW_RQ_RESULT_TTL,
                        description=description,
                    )
                    if run_at is not None:
                        # RQ's scheduler keeps whole seconds and releases what is due within the current second:
                        # round up so that a job never starts before its run_at.
                        queue.schedule_job(rq_job, _ceil_to_second(run_at), pipeline=pipe)
                    else:
                        queue.enqueue_job(rq_job, pipeline=pipe)  # it lists the queue too
                        listed.add(job.queue)
                        if queue.is_async:
                            _templates[(job.queue, settings.SENTINELFLOW_RQ_RESULT_TTL)] = _LikeRQEnqueue(queue, rq_job)
                batch.inc("jobs_enqueued_total", job.type, job.queue)
            batch.add_to(pipe)
            pipe.execute()
    except RedisError as error:
        logger.warning("%d job(s) kept as pending, Redis unavailable: %s", len(jobs), error)
        for job in jobs:
            try:
                transition(job, S.PENDING, sources=[S.QUEUED, S.SCHEDULED], actor="redis unavailable")
            except InvalidTransition:
                pass  # a worker or a cancel got to it first
        with metrics.record() as batch:  # Redis may be back already; if not this is dropped and logged
            for name, labels in counts:
                batch.inc(name, *labels)


class _LikeRQEnqueue:
    """Enqueues run_job jobs on a queue as RQ enqueued an earlier one there, without building an RQ Job
    for each.

    RQ's per-job cost (a Job object, its serializer checked against a Protocol, the status written
    twice) is half of a batch's enqueue and a fifth of a single submit's CPU. run_job jobs of one queue
    differ only in id, arguments, description, timeout and times: the hash RQ wrote for the first job
    a process enqueued on a queue is the template for the others (_templates). Each push stamps its
    jobs' created_at and enqueued_at afresh, and lists the queue in RQ's set of queues as RQ does.
    tests/test_submit_storage.py compares what this writes with what RQ writes, field by field.
    """

    def __init__(self, queue: Queue, first: RQJob) -> None:
        self.queue_key = queue.key
        self.queues_key = queue.redis_queues_keys
        # Encoded once as the client would encode them each time: packing the commands is most of the cost.
        self.encode = cast("Callable[[Any], bytes]", queue.connection.get_encoder().encode)  # redis-py: unannotated
        self.template = {self.encode(field): self.encode(value) for field, value in first.to_dict().items()}
        self.func_name = first.func_name
        self.dumps = first.serializer.dumps
        self.key_prefix = first.redis_job_namespace_prefix

    def list_queue(self, pipe: Pipeline) -> None:
        pipe.sadd(self.queues_key, self.queue_key)

    def enqueue(self, pipe: Pipeline, rq_id: str, *, description: str, timeout: int, at: str) -> None:
        encode = self.encode
        # What Job.data holds for func(rq_id), compressed as Job.to_dict does.
        data = zlib.compress(self.dumps((self.func_name, None, (rq_id,), {})))
        stamp = encode(at)
        mapping: dict[Any, bytes] = {
            **self.template,
            b"created_at": stamp,
            b"enqueued_at": stamp,
            b"data": data,
            b"description": encode(description),
            b"timeout": encode(timeout),
        }
        pipe.hset(self.key_prefix + rq_id, mapping=mapping)
        pipe.rpush(self.queue_key, rq_id)


# This process's templates, by queue name and result TTL (the TTLs are in the hash).
_templates: dict[tuple[str, int], _LikeRQEnqueue] = {}


def _ceil_to_second(moment: datetime) -> datetime:
    return moment if moment.microsecond == 0 else moment.replace(microsecond=0) + timedelta(seconds=1)


def delete_rq_job(rq_job_id: str) -> None:
    try:
        RQJob.fetch(rq_job_id, connection=redis_store.connection()).delete()
    except NoSuchJobError:
        pass


def remove_from_redis(job: Job, *, was_running: bool) -> None:
    """Take a cancelled job off its queue, or stop its run on its worker.

    Best effort: the worker also checks the row before running, so a job left in Redis never runs.
    """
    job_id = str(job.job_id)
    connection = redis_store.connection()
    try:
        if was_running:
            send_stop_job_command(connection, job_id)
        else:
            delete_rq_job(job_id)
    except (NoSuchJobError, InvalidJobOperation):
        pass
    except RedisError as error:
        logger.warning("job %s cancelled in the database but not in Redis: %s", job_id, error)
