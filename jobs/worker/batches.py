"""Batches: how a worker takes several jobs per round trip and records their outcomes together.

Per batch, whatever its size: one pop from the queues (LMPOP, the first non-empty queue in
priority order), one pipeline that reads the RQ jobs and takes every lease, one query for the
rows, one durable write for all the outcomes (jobs.services.runs), then one pipeline for RQ's
bookkeeping, the metrics, the leases and the worker's heartbeat. RQ's own loop costs about twenty
round trips per job.

What keeps a batch honest:
- Every taken job has a lease from the second round trip on: the sentinel never restores a job
  that a live process holds. A worker killed mid-batch leaves rows that say `queued` with no lease
  and not in any queue: the sentinel puts them back (a run that had begun may run again).
- RQ hears of an outcome only after its row is durable.
- The batch size adapts to how long jobs take (TARGET_BATCH_SECONDS), and a run that lasts past
  START_RECORD_AFTER gives the jobs it holds up back to the head of their queues, records its
  own start, and writes the outcomes that were waiting: a slow job never holds up other jobs or
  their results for more than about a second.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq.queue import Queue
from rq.utils import utcformat

from .. import metrics, redis_store, services
from ..models import Job
from ..services.runs import Run
from ..store.records import RunOutcome
from . import limits

if TYPE_CHECKING:
    from .workers import Worker

logger = logging.getLogger(__name__)

T = TypeVar("T")
RUN_JOB = services.RUN_JOB
# A batch holds about this much work: many short jobs, or one long one.
TARGET_BATCH_SECONDS = 0.05
# Redis LMPOP/BLMPOP (7.0) take several jobs from the first non-empty queue in one command.
LMPOP_SINCE = (7, 0, 0)
# In the pipeline that takes a batch, each job's HGET of its RQ data, then its lease's HSET and EXPIRE.
LEASE_COMMANDS_PER_JOB = 3


@dataclass
class Taken:
    """A job taken off a queue: its RQ job id (the job's id), its queue and its lease."""

    job_id: str
    queue: Queue
    lease: redis_store.JobLease
    rq_job_exists: bool = True
    foreign: bool = False  # an RQ job that is not a sentinelflow job: run by RQ's own code
    slot_key: str | None = None  # the concurrency slot its run holds (jobs.worker.limits)


@dataclass
class Batch:
    """The jobs of one batch, the runs not started yet, and the outcomes not written yet."""

    worker: Worker
    taken: list[Taken]
    waiting: list[tuple[Taken, Job]] = field(default_factory=list)
    skipped: list[Taken] = field(default_factory=list)  # taken, but their rows say they must not run
    outcomes: list[tuple[Taken, RunOutcome]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def next_run(self) -> tuple[Taken, Job] | None:
        with self.lock:
            return self.waiting.pop(0) if self.waiting else None

    def give_back(self, reason: str) -> None:
        """Put the jobs not started yet back at the head of their queues, in order, and drop their leases."""
        with self.lock:
            returned, self.waiting = self.waiting, []
        if not returned:
            return
        by_queue: dict[str, list[Taken]] = {}
        for taken, _job in returned:
            by_queue.setdefault(taken.queue.key, []).append(taken)
        try:
            with redis_store.connection().pipeline(transaction=False) as pipe:
                for key, items in by_queue.items():
                    pipe.lpush(key, *[taken.job_id for taken in reversed(items)])
                    for taken in items:
                        taken.lease.release(via=_into(pipe))
                pipe.execute()
        except RedisError as error:
            # Their leases expire and the sentinel puts them back (their rows still say `queued`).
            logger.warning("worker %s could not give back %d job(s): %s", self.worker.name, len(returned), error)
            return
        logger.info("worker %s gave back %d job(s) to their queues: %s", self.worker.name, len(returned), reason)

    def add_outcome(self, taken: Taken, outcome: RunOutcome) -> None:
        with self.lock:
            self.outcomes.append((taken, outcome))

    def flush(self) -> None:
        """Write the outcomes waiting (one durable write), then tell RQ, release the leases, count."""
        with self.lock:
            pending, self.outcomes = self.outcomes, []
            skipped, self.skipped = self.skipped, []
            if pending or skipped:
                write_outcomes(self.worker, pending, skipped)


def take(worker: Worker, count: int, block_seconds: float | None) -> list[Taken]:
    """Pop up to `count` jobs from the first non-empty queue; wait up to `block_seconds` for one
    when all are empty (None: do not wait). Reads their RQ jobs and takes their leases."""
    connection = worker.connection
    # Paused queues (services.flow_state, cached a second) are left alone: their jobs wait where they are.
    paused = services.flow_state().paused_queues
    queues = {queue.key: queue for queue in worker.queues if queue.name not in paused}
    if not queues:
        if block_seconds:
            worker.set_state("idle")
            time.sleep(min(block_seconds, services.flow.FLOW_STATE_TTL))
        return []
    popped = _pop(worker, list(queues), count, block_seconds)
    if not popped:
        return []
    key, ids = popped
    queue = queues[key]
    if queue.name in services.flow_state().paused_queues:
        # Paused while this worker waited on it: back to the head of the queue, in order, untouched.
        connection.lpush(key, *reversed(ids))
        return []
    taken = [Taken(job_id=rq_id.decode(), queue=queue, lease=redis_store.JobLease(rq_id.decode())) for rq_id in ids]
    with connection.pipeline(transaction=False) as pipe:
        for item in taken:
            pipe.hget(queue.job_class.key_for(item.job_id), "data")
            item.lease.take(via=_into(pipe))
        worker.set_state("busy", pipeline=pipe)
        answers = pipe.execute()[: LEASE_COMMANDS_PER_JOB * len(taken)]
    for item, data in zip(taken, _data_fields(answers, len(taken)), strict=True):
        item.rq_job_exists = data is not None
        item.foreign = data is not None and not _is_run_job(worker, data, item.job_id)
    return taken


def _into(pipe: Pipeline) -> Callable[[redis_store.PipelineStep], None]:
    """A lease's `via`: its commands go into this pipeline."""

    def add(step: redis_store.PipelineStep) -> None:
        step(pipe)

    return add


def _data_fields(answers: list[Any], count: int) -> list[bytes | None]:
    return [answers[index * LEASE_COMMANDS_PER_JOB] for index in range(count)]


def _pop(worker: Worker, keys: list[str], count: int, block_seconds: float | None) -> tuple[str, list[bytes]] | None:
    connection = worker.connection
    found: Any
    if worker.redis_version >= LMPOP_SINCE:
        found = connection.lmpop(len(keys), *keys, direction="LEFT", count=count)
        if found is None and block_seconds is not None:
            worker.set_state("idle")
            found = connection.blmpop(block_seconds, len(keys), *keys, direction="LEFT", count=count)
        if found is None:
            return None
        return found[0].decode(), list(found[1])
    # Redis 6.2 (the embedded one): the first non-empty queue in order, then a blocking wait for one.
    for key in keys:
        found = connection.lpop(key, count)
        if found:
            return key, list(found)
    if block_seconds is None:
        return None
    worker.set_state("idle")
    found = connection.blpop(keys, timeout=block_seconds)
    return None if found is None else (found[0].decode(), [found[1]])


def _is_run_job(worker: Worker, data: bytes, job_id: str) -> bool:
    """Whether the RQ job's data is `jobs.tasks.run_job(job_id)` (as RQ decodes it)."""
    try:
        raw = zlib.decompress(data)
    except zlib.error:
        raw = data
    try:
        func_name, _instance, args, _kwargs = worker.serializer.loads(raw)
    except Exception:  # noqa: BLE001 - whatever it is, RQ's own code runs it
        return False
    return bool(func_name == RUN_JOB and tuple(args) == (job_id,))


def write_outcomes(worker: Worker, pending: list[tuple[Taken, RunOutcome]], skipped: list[Taken]) -> None:
    """One durable write for the outcomes, then one pipeline: RQ's bookkeeping, leases, metrics, heartbeat."""
    outcomes = [outcome for _taken, outcome in pending]
    close_old_connections()
    with metrics.record() as batch:
        moved = durably(worker, lambda: services.runs_finish(outcomes, batch=batch))
        dropped = {outcome.job.pk for outcome in outcomes} - moved
        cancelled = services.cancelled_among(dropped)
        ended = utcformat(datetime.now(UTC))

        def bookkeeping(pipe: Pipeline) -> None:
            finished = FinishedRegistries()
            for taken in skipped:  # cancelled or finished before their turn: RQ sees them end
                rq_done(pipe, taken, retry_in=None, ended=ended, worker_name=worker.name, finished=finished)
                taken.lease.let_expire()
            for taken, outcome in pending:
                limits.release(pipe, taken.slot_key, taken.job_id)
                retry_in = outcome.retry_in if outcome.job.pk in moved else None
                rq_done(pipe, taken, retry_in=retry_in, ended=ended, worker_name=worker.name, finished=finished)
                # The row is durable: the lease may lapse (a retry pushed back at once is another run's).
                taken.lease.let_expire()
            finished.add_to(pipe)
            pipe.hincrby(worker.key, "successful_job_count", len(pending))
            seconds = sum((o.finished_at - o.started_at).total_seconds() for o in outcomes)
            pipe.hincrbyfloat(worker.key, "total_working_time", seconds)
            worker.heartbeat(pipeline=pipe)

        batch.also(bookkeeping)
    for _taken, outcome in pending:
        log_outcome(worker, outcome, moved=outcome.job.pk in moved, cancelled=outcome.job.pk in cancelled)


def durably(worker: Worker, call: Callable[[], T]) -> T:
    """Call `call` (a read or write of the batch's rows), retrying while the database is away. The taken
    jobs' leases stay held meanwhile; a worker that stops or dies waiting leaves them to the sentinel."""
    delay = 1.0
    while True:
        try:
            return call()
        except (OperationalError, InterfaceError) as error:
            if worker._stop_requested and delay > 8:
                raise
            logger.warning("worker %s: the database failed (%s); retrying in %.0f s", worker.name, error, delay)
        time.sleep(delay)
        close_old_connections()
        delay = min(delay * 2, 30.0)


class FinishedRegistries:
    """The ids to add to each queue's FinishedJobRegistry, scored by expiry as RQ does: one ZADD per queue."""

    def __init__(self) -> None:
        self.expiry = time.time() + settings.SENTINELFLOW_RQ_RESULT_TTL
        self.ids: dict[str, dict[str, float]] = {}

    def add(self, queue: Queue, job_id: str) -> None:
        self.ids.setdefault(queue.finished_job_registry.key, {})[job_id] = self.expiry

    def add_to(self, pipe: Pipeline) -> None:
        for key, scores in self.ids.items():
            pipe.zadd(key, scores)


def rq_done(
    pipe: Pipeline, taken: Taken, *, retry_in: int | None, ended: str, worker_name: str, finished: FinishedRegistries
) -> None:
    """What RQ's worker writes for a job that ended, or for its retry (as RQ's handling of `rq.Retry`)."""
    if not taken.rq_job_exists:
        return
    queue, key = taken.queue, taken.queue.job_class.key_for(taken.job_id)
    if retry_in is None:
        ttl = settings.SENTINELFLOW_RQ_RESULT_TTL
        pipe.hset(key, mapping={"status": "finished", "ended_at": ended, "worker_name": worker_name})
        if ttl > 0:
            pipe.expire(key, ttl)
            finished.add(queue, taken.job_id)
        elif ttl == 0:
            pipe.delete(key)
    elif retry_in > 0:
        pipe.hset(key, mapping={"status": "scheduled", "ended_at": ended})
        # Whole seconds, rounded up: never before the row's run_at (see services.runs.run_outcome).
        pipe.zadd(queue.scheduled_job_registry.key, {taken.job_id: int(time.time()) + retry_in + 1})
    else:
        pipe.hset(key, mapping={"status": "queued", "ended_at": ended})
        pipe.rpush(queue.key, taken.job_id)


def log_outcome(worker: Worker, outcome: RunOutcome, *, moved: bool, cancelled: bool) -> None:
    job = outcome.job
    seconds = (outcome.finished_at - outcome.started_at).total_seconds()
    if not moved:
        if cancelled and outcome.target == "succeeded":
            why = "finished after it was cancelled; its result is dropped"
        elif cancelled:
            why = "stopped: it was cancelled while it ran"
        else:
            why = "ended after it was given up for lost or run elsewhere; its outcome is dropped"
        logger.info("job %s attempt %s %s", job.job_id, job.attempts, why)
        return
    if outcome.target != "succeeded":
        error = outcome.changes.get("error", "").strip().splitlines()
        logger.info("job %s attempt %s failed: %s", job.job_id, job.attempts, error[-1] if error else "")
    worker.log.info("Worker %s: %s: job %s %s in %.4f s", worker.name, job.queue, job.job_id, outcome.target, seconds)


# --------------------------------------------------------------------------- the start recorder


class StartRecorder:
    """One daemon thread per process that acts on runs lasting past `after` seconds (see the module
    docstring): the worker's callback gives back the batch, writes waiting outcomes and the start."""

    def __init__(self, *, after: float = services.START_RECORD_AFTER) -> None:
        self.after = after
        self._due: dict[int, tuple[float, Run, Callable[[Run], None]]] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, run: Run, on_long_run: Callable[[Run], None]) -> None:
        with self._wake:
            self._due[id(run)] = (time.monotonic() + self.after, run, on_long_run)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="start recorder", daemon=True)
                self._thread.start()
            self._wake.notify()

    def forget(self, run: Run) -> None:
        with self._wake:
            self._due.pop(id(run), None)

    def _loop(self) -> None:
        try:
            while True:
                with self._wake:
                    if not self._due:
                        self._wake.wait(timeout=30)
                        if not self._due:
                            self._thread = None
                            return
                        continue
                    first = min(deadline for deadline, _run, _callback in self._due.values())
                    delay = first - time.monotonic()
                    if delay > 0:
                        self._wake.wait(timeout=delay)
                        continue
                    now = time.monotonic()
                    ready = [(key, run, cb) for key, (deadline, run, cb) in self._due.items() if deadline <= now]
                    for key, _run, _callback in ready:
                        del self._due[key]
                for _key, run, callback in ready:
                    try:
                        callback(run)
                    except Exception:
                        logger.exception("start of job %s not recorded", run.job.job_id)
                # Long runs are few: a connection per round costs little, and none is left open idle.
                connections.close_all()
        finally:
            connections.close_all()  # this thread's own connections


recorder = StartRecorder()
