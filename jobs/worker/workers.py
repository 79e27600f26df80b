"""The RQ worker classes that `manage.py rqworker` runs (RQ["WORKER_CLASS"] in settings).

`Worker` takes jobs in batches (jobs.worker.batches): up to WORKER_BATCH_SIZE per round trip,
fewer when jobs are slow, with one durable write for the batch's outcomes. An RQ job on its
queues that is not a sentinelflow job is run by RQ's own code, one at a time.

It runs each job in the worker process itself instead of forking a work horse per job:
forking a Django process for every job costs far more than a short job does (see
docs/performance.md), and the database, not the horse's isolation, is what keeps a job's record safe.
What the fork gave, this class keeps:
- a timeout per run (RQ's SIGALRM death penalty, in the main thread);
- cancelling a running job: RQ's stop-job command interrupts it with a signal;
- Django hygiene between jobs: stale database connections are closed, as after a request.
It also outlives a Redis outage: where RQ's loop quits on a lost connection, this one waits
and reconnects; a worker that starts while Redis does not answer waits for it the same way,
saying so with the REDIS_URL it tries, instead of exiting with RQ's bare connection error.

`ConcurrentWorker` runs WORKER_CONCURRENCY such workers in threads of one process, for
I/O-bound job types: several jobs in flight per process, each one an ordinary RQ worker with
the same lifecycle, retries and timeouts (timeouts by timer in the extra threads). A running
job in an extra thread is cancelled cooperatively (handlers check `context.is_cancelled()`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import close_old_connections
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.job import Job as RQJob
from rq.queue import Queue
from rq.scheduler import RQScheduler
from rq.timeouts import JobTimeoutException, TimerDeathPenalty
from rq.utils import utcformat
from rq.worker import SimpleWorker, WorkerStatus

from .. import services
from ..models import Job
from ..services.runs import Run
from ..tasks import CANCELLED_RUN, call_handler
from . import batches, limits
from .batches import Batch, Taken

logger = logging.getLogger(__name__)

# Sent by the worker to itself to interrupt the job it runs when RQ's stop-job command arrives.
STOP_JOB_SIGNAL = signal.SIGUSR1
REDIS_RETRY_SECONDS = 2.0
# Waiting for Redis at start: 1 s, 2 s, 4 s ... between tries, at most this long.
REDIS_START_BACKOFF_MAX = 30.0


def redis_url_for_logs() -> str:
    """REDIS_URL without its password, to name it in a log line (and the sentinels asked, when there are)."""
    if settings.REDIS_SENTINELS:
        sentinels = ",".join(f"{host}:{port}" for host, port in settings.REDIS_SENTINELS)
        return f"{_masked(settings.REDIS_URL)} (primary of {settings.REDIS_SENTINEL_MASTER} via {sentinels})"
    return _masked(settings.REDIS_URL)


def _masked(redis_url: str) -> str:
    url = urlsplit(redis_url)
    if url.password is None:
        return redis_url
    return url._replace(netloc=url.netloc.replace(f":{url.password}@", ":***@")).geturl()


def wait_for_redis_at_start(connection: redis.Redis) -> None:
    """Return once Redis answers, logging each refusal with REDIS_URL and the next try (exponential backoff)."""
    delay = 1.0
    while True:
        try:
            connection.ping()
            return
        except (redis.ConnectionError, redis.TimeoutError) as error:
            logger.warning(
                "Worker: Redis at REDIS_URL=%s does not answer (%s); waiting for it, next try in %.0f s",
                redis_url_for_logs(),
                error,
                delay,
            )
        time.sleep(delay)
        delay = min(delay * 2, REDIS_START_BACKOFF_MAX)


class FailoverProofScheduler(RQScheduler):
    """RQ's scheduler process, which carries on through a lost Redis or a failover instead of exiting.

    RQ's own exits on its first Redis error, and its worker starts a new one only at its next maintenance
    (every 10 minutes): scheduled jobs and retries would wait that long after a failover.
    """

    def work(self) -> None:
        while True:
            try:
                super().work()
                return
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as error:
                self.log.warning("Scheduler: Redis unavailable (%s); retrying in %.0f s", error, REDIS_RETRY_SECONDS)
                if self._stop_requested:
                    return
                time.sleep(REDIS_RETRY_SECONDS)


class JobStopped(Exception):
    """Raised inside a running job that was cancelled; the job's row is already `cancelled`."""


class Worker(SimpleWorker):
    """A no-fork RQ worker for Django jobs (see the module docstring)."""

    # RQ retries a lost Redis inside its dequeue loop, waiting up to a minute between tries and looking
    # at nothing else meanwhile; short waits let a stop request be seen within seconds.
    max_connection_wait_time = REDIS_RETRY_SECONDS

    def __init__(self, *args, **kwargs):
        connection = kwargs.get("connection")
        if connection is not None and kwargs.get("prepare_for_work", True):
            # RQ talks to Redis while it builds the worker and would exit on a refused connection.
            wait_for_redis_at_start(connection)
        super().__init__(*args, **kwargs)
        self._running_job_id: str | None = None
        self._stop_job_id: str | None = None
        self.batch_size = 1  # grows with short jobs, up to WORKER_BATCH_SIZE (see _adapt_batch_size)
        self.redis_version: tuple[int, ...] = (0,)
        self._seconds_per_job: float | None = None

    def get_current_job_id(self) -> str | None:
        # RQ's stop-job command asks this; a batch's run is not one of RQ's executions.
        return self._running_job_id or super().get_current_job_id()

    def execute_job(self, job: RQJob, queue: Queue):
        close_old_connections()
        self._running_job_id = job.id
        try:
            super().execute_job(job, queue)
        finally:
            self._running_job_id = None
            self._stopped_job_id = None  # RQ only clears it on a failure that reaches RQ; ours never do
            close_old_connections()

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        if burst:
            super()._start_scheduler(burst, logging_level, date_format, log_format)
            return
        # RQ's method, with the scheduler above (RQ names its class inside the method).
        self.scheduler = FailoverProofScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            self.scheduler.start()

    def _install_signal_handlers(self):
        super()._install_signal_handlers()
        signal.signal(STOP_JOB_SIGNAL, self._interrupt_stopped_job)

    def _finalize_success(self, job: RQJob, queue: Queue, execution, return_value):
        if return_value != CANCELLED_RUN:
            return super()._finalize_success(job, queue, execution, return_value)
        # The job was cancelled while it ran (jobs.tasks logged it). For RQ the function returned, so its
        # bookkeeping is a success's; its "Successfully completed" line would contradict the job's status.
        self.log.info("Worker %s: job %s stopped: it was cancelled while it ran", self.name, job.id)
        # (RQ types its log a Logger; the adapter answers every call a Logger does.)
        log, self.log = self.log, _WithoutSuccessLine(self.log, {})  # type: ignore[assignment]
        try:
            return super()._finalize_success(job, queue, execution, return_value)
        finally:
            self.log = log

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL):
        """RQ's stop-job command (from the pubsub thread): interrupt the job if it is still the one running."""
        job_id = self._stopped_job_id
        if job_id and job_id == self._running_job_id:
            self._stop_job_id = job_id
            self.log.info("Worker %s: stopping job %s on request", self.name, job_id)
            main = threading.main_thread().ident
            assert main is not None  # the main thread has started: it runs this worker
            signal.pthread_kill(main, STOP_JOB_SIGNAL)

    def _interrupt_stopped_job(self, signum, frame):
        # Runs in the main thread, between two bytecodes of whatever it was doing: only raise inside
        # the job that was asked to stop, never in the next one.
        if self._stop_job_id is not None and self._stop_job_id == self._running_job_id:
            self._stop_job_id = None
            raise JobStopped(f"job {self._running_job_id} was cancelled while it ran")

    def request_stop(self, signum, frame):
        # RQ records a stop request only while a job runs; an idle worker raises StopRequested to leave
        # its loop instead, whose teardown then fails on a lost Redis, and work() went back to waiting
        # for Redis until a second signal. Recorded always, work() returns.
        self._stop_requested = True
        super().request_stop(signum, frame)

    def work(self, burst: bool = False, *args: Any, **kwargs: Any) -> bool:
        """The batch loop, restarted after a lost Redis connection or a failover instead of exiting."""
        while True:
            try:
                self._ping()
                worked = self._work_batches(burst, *args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as error:
                # ReadOnlyError: a primary demoted by a failover (through the sentinels it is a ConnectionError).
                worked = False
                self.log.warning("Worker %s: Redis unavailable (%s); retrying", self.name, error)
            if burst or self._stop_requested or kwargs.get("max_jobs") or kwargs.get("max_idle_time"):
                return worked
            if self._redis_is_up():
                # The loop quits on any other error in it (as RQ's does), even when Redis answers again a
                # moment later: carry on, under a fresh name as below.
                self.name = uuid.uuid4().hex
                self.log.warning("Worker %s: the work loop ended without a stop request; resuming", self.name)
                time.sleep(REDIS_RETRY_SECONDS)
                continue
            self._wait_for_redis()

    # ----------------------------------------------------------------- the loop, a batch a turn

    def _work_batches(
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        **_ignored: Any,
    ) -> bool:
        """RQ's work loop (BaseWorker.work), taking a batch of jobs each turn instead of one."""
        self.bootstrap(logging_level, date_format, log_format)
        self.redis_version = tuple(self.get_redis_server_version())
        if with_scheduler:
            self._start_scheduler(burst, logging_level, date_format, log_format)
        self._install_signal_handlers()
        completed = 0
        try:
            while True:
                try:
                    self.check_for_suspension(burst)
                    if self.should_run_maintenance_tasks:
                        self.run_maintenance_tasks()
                    if self._stop_requested:
                        self.log.info("Worker %s: stopping on request", self.name)
                        break
                    taken = self._take(None if burst else (max_idle_time or self.dequeue_timeout))
                    if not taken:
                        if burst or max_idle_time is not None:
                            self.log.info("Worker %s: done, quitting", self.name)
                            break
                        continue
                    completed += self._run_batch(taken)
                    if max_jobs is not None and completed >= max_jobs:
                        self.log.info("Worker %s: finished executing %d jobs, quitting", self.name, completed)
                        break
                except StopRequested:
                    break
                except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
                    raise  # work() waits for Redis, or for the new primary, and starts over
                except Exception:
                    # As RQ's loop: log and leave it; work() starts it again under a fresh name.
                    self.log.error("Worker %s: found an unhandled exception, quitting...", self.name, exc_info=True)
                    break
        finally:
            self.teardown()
        return bool(completed)

    def _take(self, block_seconds: float | None) -> list[Taken]:
        taken = batches.take(self, self.batch_size, block_seconds)
        if taken:
            self._state = WorkerStatus.BUSY  # a stop request now waits for the batch (RQ's warm shutdown)
        return taken

    def _run_batch(self, taken: list[Taken]) -> int:
        """Run the jobs taken; returns how many ran."""
        close_old_connections()
        batch = Batch(worker=self, taken=taken)
        ours = [item for item in taken if not item.foreign]
        rows = batches.durably(self, lambda: services.runs_claim([item.job_id for item in ours]))
        batch.waiting = [(item, rows[item.job_id]) for item in ours if item.job_id in rows]
        batch.skipped = [item for item in ours if item.job_id not in rows]
        ran, run_seconds = 0, 0.0
        try:
            while not self._stop_requested and (next_run := batch.next_run()) is not None:
                if not self._may_run(*next_run):
                    continue  # held back: it waits in the scheduled registry (jobs.worker.limits)
                began = time.monotonic()
                self._run_one(batch, *next_run)
                run_seconds += time.monotonic() - began
                ran += 1
                if next_run[0].slot_key:
                    # Its concurrency slot is freed with its outcome: write it now, not at the batch's end, or
                    # the batch's next jobs of the type would wait for slots its own finished runs still hold.
                    batch.flush()
        finally:
            # A stop request, or an error: the jobs not started go back to the head of their queues.
            batch.give_back("the worker is stopping")
            batch.flush()
        self._adapt_batch_size(run_seconds, ran)
        for item in taken:
            if item.foreign:
                item.lease.release()
                self._run_rq_job(item)
                ran += 1
        self._state = WorkerStatus.IDLE
        return ran

    def _may_run(self, taken: Taken, job: Job) -> bool:
        """Whether the job's type lets it run now (paused, concurrency, rate); holds it back when not. No Redis
        round trip for a type without limits (the flow state is cached per process)."""
        policy = services.flow_state().policy_for(job.type)
        if policy is None or not taken.rq_job_exists:
            return True
        try:
            decision = limits.acquire(self.connection, policy, job, taken.job_id)
        except Exception:
            # Neither run nor held: its lease lapses and the sentinel puts it back (its row says `queued`).
            taken.lease.let_expire()
            raise
        if decision.go:
            taken.slot_key = decision.slot_key
            return True
        limits.hold(self.connection, taken, job, decision)
        return False

    def _run_one(self, batch: Batch, taken: Taken, job: Job) -> None:
        run = services.run_begin(job, actor=f"worker:{self.name}")
        batches.recorder.watch(run, lambda run: self._on_long_run(batch, taken, run))
        result: Any = None
        error: BaseException | None = None
        self._running_job_id = taken.job_id
        try:
            timeout = job.timeout or Queue.DEFAULT_TIMEOUT
            with self.death_penalty_class(timeout, JobTimeoutException, job_id=taken.job_id):
                result = call_handler(job)
        except Exception as failure:  # noqa: BLE001 - any handler failure is a failed attempt, timeouts included
            error = failure
        finally:
            self._running_job_id = None
            self._stop_job_id = None
            batches.recorder.forget(run)
        batch.add_outcome(taken, services.run_outcome(run, result=result, error=error))

    def _on_long_run(self, batch: Batch, taken: Taken, run: Run) -> None:
        """A run is still going after a second (from the recorder thread): free the rest of its batch for
        other workers, write the outcomes that waited, tell RQ which worker runs the job (so that a cancel
        can stop it here), then record its start."""
        batch.give_back(f"job {taken.job_id} runs long")
        batch.flush()
        if taken.rq_job_exists:
            key = taken.queue.job_class.key_for(taken.job_id)
            started = {"status": "started", "worker_name": self.name, "started_at": utcformat(run.started_at)}
            self.connection.hset(key, mapping=started)  # type: ignore[arg-type]  # redis-py's mapping type is narrow
        services.run_record_start(run)

    def _adapt_batch_size(self, seconds: float, ran: int) -> None:
        """Take as many jobs as fill about TARGET_BATCH_SECONDS, judged by the recent jobs' run time (the
        handlers' own: the batch's overhead shrinks per job as the batch grows)."""
        if not ran:
            return
        per_job, recent = seconds / ran, self._seconds_per_job
        self._seconds_per_job = per_job if recent is None else 0.7 * recent + 0.3 * per_job
        fits = int(batches.TARGET_BATCH_SECONDS / max(self._seconds_per_job, 1e-6))
        self.batch_size = max(1, min(settings.SENTINELFLOW_WORKER_BATCH_SIZE, fits, self.batch_size * 2))

    def _run_rq_job(self, taken: Taken) -> None:
        """An RQ job that is not a sentinelflow job, run by RQ's own code as RQ's SimpleWorker would."""
        try:
            job = RQJob.fetch(taken.job_id, connection=self.connection, serializer=self.serializer)
        except Exception:  # noqa: BLE001 - gone meanwhile, or undecodable: RQ would skip it too
            self.log.warning("Worker %s: RQ job %s could not be read; skipped", self.name, taken.job_id)
            return
        self.execute_job(job, taken.queue)

    def _ping(self) -> None:
        self.connection.ping()

    def _redis_is_up(self) -> bool:
        try:
            self._ping()
            return True
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def _wait_for_redis(self) -> None:
        while not self._stop_requested:
            time.sleep(REDIS_RETRY_SECONDS)
            if self._redis_is_up():
                # Register afresh under a new name: the old registration may still be in Redis, unfinished.
                self.name = uuid.uuid4().hex
                self.log.info("Worker %s: Redis is back; resuming", self.name)
                return


class _WithoutSuccessLine(logging.LoggerAdapter):
    """RQ's worker log for one cancelled run: everything but its "Successfully completed" line."""

    def info(self, msg, *args, **kwargs):
        if not str(msg).startswith("Successfully completed"):
            super().info(msg, *args, **kwargs)


class _ThreadWorker(Worker):
    """One of a ConcurrentWorker's extra workers: runs in a thread, so no signals of its own."""

    death_penalty_class = TimerDeathPenalty
    # How often an idle extra worker looks up from the queue to see whether it was asked to stop.
    STOP_CHECK_SECONDS = 2

    def _take(self, block_seconds: float | None) -> list[Taken]:
        # Only the main thread gets signals: wait on the queues in short slices, so that a stop request
        # relayed by the ConcurrentWorker is seen within STOP_CHECK_SECONDS.
        while not self._stop_requested:
            taken = super()._take(None if block_seconds is None else min(block_seconds, self.STOP_CHECK_SECONDS))
            if taken or block_seconds is None:
                return taken
        return []

    def _install_signal_handlers(self):
        pass  # only the main thread may handle signals; the ConcurrentWorker relays stop requests

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL):
        pass  # a thread cannot be interrupted safely: cancellation is cooperative here


class ConcurrentWorker(Worker):
    """WORKER_CONCURRENCY workers in one process (see the module docstring)."""

    # Short enough that an idle extra worker sees a stop request within a few seconds (RQ blocks
    # on the queue for worker_ttl - 15 s at most).
    THREAD_WORKER_TTL = 20

    def work(self, burst: bool = False, *args: Any, **kwargs: Any) -> bool:
        extra = max(0, int(getattr(settings, "SENTINELFLOW_WORKER_CONCURRENCY", 1)) - 1)
        siblings = [
            _ThreadWorker(
                self.queues,
                connection=self.connection,
                name=f"{self.name}-{number}",
                worker_ttl=self.THREAD_WORKER_TTL,
                serializer=self.serializer,
                job_class=self.job_class,
                queue_class=self.queue_class,
            )
            for number in range(1, extra + 1)
        ]
        self._siblings = siblings
        sibling_kwargs = {name: value for name, value in kwargs.items() if name != "with_scheduler"}
        threads = [
            # Only this thread may run RQ's scheduler.
            threading.Thread(
                target=sibling.work, kwargs={**sibling_kwargs, "burst": burst}, name=sibling.name, daemon=True
            )
            for sibling in siblings
        ]
        for thread in threads:
            thread.start()
        try:
            return super().work(burst, *args, **kwargs)
        finally:
            for sibling in siblings:
                sibling._stop_requested = True
            for thread in threads:
                thread.join()

    def request_stop(self, signum, frame):
        # Warm shutdown of every thread: each finishes its current job, then stops.
        for sibling in getattr(self, "_siblings", []):
            sibling._stop_requested = True
        super().request_stop(signum, frame)
