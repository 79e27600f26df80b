"""The sentinel: keeps the database and Redis in agreement, so that no job is lost.

The database row is the record; Redis only holds a job's place in a queue. One pass
(`Sentinel.run_pass`, run in a loop by `manage.py sentinel`):

1. enqueues `pending` jobs, stored while Redis was down;
   then submits the jobs of due schedule ticks (services.schedules_fire_due: one job a tick by a
   compare-and-set in the database, so a second sentinel or a pass killed mid-tick doubles none);
   then releases `waiting` jobs whose parents have all finished (or one failed) when the process that
   wrote the parent's outcome died before releasing them (services.waiting_repair);
2. recovers `started` jobs whose run is gone: the process running a job holds its lease
   (jobs.redis_store.JobLease, a key refreshed every 2 s that lives 10 s), so a job whose
   worker and work horse were killed has no lease after at most 10 s. It is run again as
   a new attempt, or failed when its attempts are spent (services.job_recover);
3. restores `queued`, `scheduled` and `retrying` jobs that Redis lost (FLUSHALL, a restart
   without persistence): no RQ job, or an RQ job in neither its queue nor its scheduled
   registry, and no run holding its lease (services.job_restore);
4. enqueues the completion callbacks that are due (services.callbacks_due): retries after their
   backoff, and attempts whose RQ job or process was lost;
5. prunes finished jobs past their retention age (services.jobs_prune): RETENTION_BATCH_SIZE rows
   per transaction, at most RETENTION_PER_PASS per pass, so neither the table nor the pass stalls.

A job is only judged lost when it looks lost twice, CONFIRM_DELAY apart, with its row
unchanged in between: longer than a lease refresh, so a lease that Redis lost (FLUSHALL
under a running job) is written again before the second look, and long enough for every
legitimate in-between state of RQ (a job between its queue and a worker, a scheduled job
being released) to have passed. Rows updated less than RESTORE_GRACE ago are not looked at
for step 3: a submit or a retry commits the row a moment before it pushes the RQ job.

Passes run under a Redis lock (SET NX PX), so several sentinels may run at once; each
repair is also a compare-and-set in jobs/services/repairs.py, so even a pass that lost its lock
cannot repair one job twice.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet
from redis import Redis
from redis.exceptions import WatchError
from rq.job import Job as RQJob

from . import redis_store, services
from .exceptions import InvalidTransition
from .models import Job, JobStatus

logger = logging.getLogger(__name__)

S = JobStatus
LOCK_KEY = "sentinelflow:sentinel:lock"
# Refreshed between batches; a sentinel killed mid-pass holds the others up for at most this long.
LOCK_TTL_MS = 20_000
# A look at Redis that says "lost" is repeated after this long before anything is repaired.
CONFIRM_DELAY = redis_store.LEASE_REFRESH + 1.0
RESTORE_GRACE = timedelta(seconds=10)
BATCH_SIZE = 500
# Queue membership is read with one LRANGE per queue and pass; past this length it is not checked
# (a job whose hash is intact is then trusted to be in its queue).
MEMBERSHIP_SCAN_LIMIT = 200_000
# RQ statuses in which an RQ job is waiting for a worker, and where it should then be found.
WAITING_RQ_STATUSES = {"queued": "queue", "scheduled": "scheduled registry"}


class LockLost(Exception):
    """Another sentinel took the lock (this pass outlived LOCK_TTL_MS); the pass stops."""


@dataclass
class PassReport:
    """What one pass did."""

    enqueued: int = 0
    recovered: int = 0
    failed: int = 0
    restored: int = 0
    scheduled: int = 0
    callbacks: int = 0
    pruned: int = 0
    released: int = 0
    seconds: float = 0.0

    @property
    def acted(self) -> bool:
        done = (self.enqueued, self.recovered, self.failed, self.restored, self.scheduled, self.released)
        return any((*done, self.callbacks, self.pruned))

    def summary(self) -> str:
        return (
            f"enqueued {self.enqueued} pending, recovered {self.recovered}, failed {self.failed} (attempts spent), "
            f"restored {self.restored} lost from Redis, submitted {self.scheduled} for schedules, "
            f"released {self.released} waiting, "
            f"sent {self.callbacks} callback attempts, pruned {self.pruned} past retention "
            f"in {self.seconds:.2f} s"
        )


@dataclass(frozen=True)
class Suspect:
    """A job that looked lost, and the row as it was then: it must be unchanged at the second look."""

    job: Job
    reason: str

    @property
    def seen(self) -> tuple[str, int, object]:
        return (self.job.status, self.job.attempts, self.job.updated_at)


class Sentinel:
    """One sentinel process. `sleep(seconds) -> bool` waits and answers True when asked to stop."""

    def __init__(self, *, sleep: Callable[[float], bool | None] | None = None) -> None:
        self.connection = redis_store.connection()
        self.sleep = sleep or time.sleep
        self._token = ""

    # ----------------------------------------------------------------- the pass

    def run_pass(self) -> PassReport | None:
        """One pass under the lock; None when another sentinel holds it. Redis and database errors propagate."""
        began = time.monotonic()
        if not self._acquire():
            return None
        report = PassReport()
        try:
            self._enqueue_pending(report)
            report.scheduled = services.schedules_fire_due()
            # Dependents whose release a process died before (after their parents' outcomes were committed).
            report.released = services.waiting_repair()
            self._refresh_lock()
            self._repair_lost(report)
            report.callbacks = services.callbacks_due()
            self._prune(report)
        except LockLost:
            logger.warning("sentinel: lock lost mid-pass; the other sentinel carries on")
        finally:
            self._release()
        report.seconds = time.monotonic() - began
        return report

    def _enqueue_pending(self, report: PassReport) -> None:
        for batch in self._batches(Job.objects.filter(status=S.PENDING)):
            for job in batch:
                try:
                    job = services.job_enqueue(job=job)
                except InvalidTransition:
                    continue  # enqueued, cancelled or started meanwhile
                if job.status == S.PENDING:
                    logger.warning("sentinel: Redis refused an enqueue; pending jobs wait for the next pass")
                    return
                report.enqueued += 1
            self._refresh_lock()

    def _repair_lost(self, report: PassReport) -> None:
        suspects = list(self._look())
        if not suspects:
            return
        self._refresh_lock()
        if self.sleep(CONFIRM_DELAY):
            return  # stopping: repair nothing half-confirmed
        self._refresh_lock()
        for number, suspect in enumerate(self._confirm(suspects), start=1):
            if number % BATCH_SIZE == 0:
                self._refresh_lock()
            try:
                if suspect.job.status == S.STARTED:
                    job = services.job_recover(job=suspect.job, reason=suspect.reason)
                    if job.status == S.FAILED:
                        report.failed += 1
                    else:
                        report.recovered += 1
                else:
                    services.job_restore(job=suspect.job, reason=suspect.reason)
                    report.restored += 1
            except InvalidTransition:
                continue  # it finished, moved or was repaired meanwhile

    def _prune(self, report: PassReport) -> None:
        limit = settings.SENTINELFLOW_RETENTION_PER_PASS
        if limit:
            self._refresh_lock()
            report.pruned = services.jobs_prune(limit=limit, between_batches=self._refresh_lock).total

    # ----------------------------------------------------------------- looking at Redis

    def _look(self) -> Iterator[Suspect]:
        """Jobs that look lost now: started ones, then queued/scheduled/retrying ones past the grace period."""
        started = Job.objects.filter(status=S.STARTED)
        restorable = Job.objects.filter(
            status__in=services.RESTORABLE_STATUSES, updated_at__lt=services.now() - RESTORE_GRACE
        )
        members = QueueMembers(self.connection)
        for rows in (self._batches(started), self._batches(restorable)):
            for batch in rows:
                yield from self._diagnose(batch, members)
                self._refresh_lock()

    def _confirm(self, suspects: list[Suspect]) -> Iterator[Suspect]:
        """The suspects that still look lost, with their rows unchanged since the first look."""
        members = QueueMembers(self.connection)
        for start in range(0, len(suspects), BATCH_SIZE):
            first = {suspect.job.pk: suspect for suspect in suspects[start : start + BATCH_SIZE]}
            fresh = list(_scanned(Job.objects.filter(pk__in=first)).order_by("id"))
            for suspect in self._diagnose(fresh, members):
                if suspect.seen == first[suspect.job.pk].seen:
                    yield suspect

    def _diagnose(self, jobs: list[Job], members: QueueMembers) -> list[Suspect]:
        if not jobs:
            return []
        registries = {job.queue: redis_store.queue(job.queue).scheduled_job_registry.key for job in jobs}
        pipe = self.connection.pipeline(transaction=True)  # one consistent snapshot per batch
        for job in jobs:
            job_id = str(job.job_id)
            pipe.exists(redis_store.lease_key(job_id))
            pipe.hget(RQJob.key_for(job_id), "status")
            pipe.zscore(registries[job.queue], job_id)
        answers = pipe.execute()
        suspects = []
        for index, job in enumerate(jobs):
            leased, rq_status, scheduled_at = answers[3 * index : 3 * index + 3]
            if leased:
                continue  # a live process is running (or just starting) this job
            reason = self._reason(job, rq_status.decode() if rq_status else None, scheduled_at is not None, members)
            if reason:
                suspects.append(Suspect(job=job, reason=reason))
        return suspects

    @staticmethod
    def _reason(job: Job, rq_status: str | None, in_scheduled: bool, members: QueueMembers) -> str | None:
        """Why a job with no lease is lost, or None when Redis still holds it."""
        if job.status == S.STARTED:
            if rq_status is None:
                return "no process holds its lease any more, and its RQ job is gone"
            return f"no process holds its lease any more (RQ status: {rq_status})"
        if rq_status is None:
            return "its RQ job is missing from Redis"
        if rq_status == "scheduled":
            return None if in_scheduled else "its RQ job is not in its scheduled registry"
        if rq_status == "queued":
            found = members.contains(job.queue, str(job.job_id))
            return None if found is not False else f"its RQ job is not in queue {job.queue!r}"
        if rq_status == "started":
            return "its RQ job was taken by a worker that stopped before the run began"
        return f"its RQ job is {rq_status}, but no run recorded an outcome"

    # ----------------------------------------------------------------- rows

    @staticmethod
    def _batches(queryset: QuerySet[Job]) -> Iterator[list[Job]]:
        """Rows in id order, BATCH_SIZE at a time, each batch read fresh (keyset pagination)."""
        last = 0
        while True:
            batch = list(_scanned(queryset).filter(pk__gt=last).order_by("id")[:BATCH_SIZE])
            if not batch:
                return
            yield batch
            last = batch[-1].pk

    # ----------------------------------------------------------------- the lock

    def _acquire(self) -> bool:
        if self._token:
            # The last pass could not release the lock (Redis failed under it): take it back if still ours.
            try:
                self._refresh_lock()
                return True
            except LockLost:
                self._token = ""
        token = secrets.token_hex(8)
        if self.connection.set(LOCK_KEY, token, nx=True, px=LOCK_TTL_MS):
            self._token = token
            return True
        return False

    def _refresh_lock(self) -> None:
        """Extend the lock while it is still ours; LockLost when it is not."""
        with self.connection.pipeline() as pipe:
            try:
                pipe.watch(LOCK_KEY)  # type: ignore[no-untyped-call]  # unannotated in redis-py
                if pipe.get(LOCK_KEY) != self._token.encode():
                    pipe.unwatch()
                    raise LockLost()
                pipe.multi()
                pipe.pexpire(LOCK_KEY, LOCK_TTL_MS)
                pipe.execute()
            except WatchError:
                raise LockLost() from None

    def _release(self) -> None:
        redis_store.compare_and_delete(self.connection, LOCK_KEY, self._token)
        self._token = ""  # not reached when Redis fails: the next pass takes the lock back (see _acquire)


def _scanned(queryset: QuerySet[Job]) -> QuerySet[Job]:
    # The sentinel reads statuses and times; a job's payload, result and error may be large and stay unread.
    return queryset.defer("payload", "result", "error")


class QueueMembers:
    """Which job ids each RQ queue (and its intermediate list) holds: one LRANGE per queue, read when first asked."""

    def __init__(self, connection: Redis) -> None:
        self.connection = connection
        self._ids: dict[str, set[str] | None] = {}

    def contains(self, queue_name: str, job_id: str) -> bool | None:
        """True or False; None when the queue is too long to scan (see MEMBERSHIP_SCAN_LIMIT)."""
        if queue_name not in self._ids:
            self._ids[queue_name] = self._read(queue_name)
        ids = self._ids[queue_name]
        return None if ids is None else job_id in ids

    def _read(self, queue_name: str) -> set[str] | None:
        queue = redis_store.queue(queue_name)
        keys = [queue.key, queue.intermediate_queue_key]
        if sum(self.connection.llen(key) for key in keys) > MEMBERSHIP_SCAN_LIMIT:
            return None
        pipe = self.connection.pipeline(transaction=True)
        for key in keys:
            pipe.lrange(key, 0, -1)
        return {value.decode() for values in pipe.execute() for value in values}
