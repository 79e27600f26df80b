"""Cluster-wide job metrics, kept in Redis and exposed through prometheus_client.

Every process that makes a transition (web, worker, sentinel) adds to the same
Redis hashes, so each replica's /metrics shows the same totals and a restart
resets nothing. Increments for one transition go in one pipeline (one round
trip). A failure to count never fails the job: it is logged and dropped.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from redis.client import Pipeline
from redis.exceptions import RedisError

from . import redis_store
from .models import Job, JobStatus

logger = logging.getLogger(__name__)

KEY_PREFIX = "sentinelflow:metrics:"
LABEL_SEPARATOR = "\x1f"
HISTOGRAM_SEPARATOR = "\x1e"

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "jobs_submitted_total": ("Jobs accepted (a repeated Idempotency-Key is not counted).", ("type",)),
    "jobs_enqueued_total": ("Jobs put on an RQ queue: first enqueue, retries and restores.", ("type", "queue")),
    "jobs_started_total": ("Job runs started by a worker.", ("type",)),
    "jobs_succeeded_total": ("Jobs that ended succeeded.", ("type",)),
    "jobs_failed_total": ("Jobs that ended failed (retries spent or permanent error).", ("type",)),
    "jobs_retried_total": ("Jobs sent round again: auto (backoff), manual, recovered.", ("type", "reason")),
    "jobs_cancelled_total": ("Jobs cancelled.", ("type",)),
    "jobs_pruned_total": ("Finished jobs deleted by retention (with their timelines).", ("type", "status")),
    "jobs_callback_attempts_total": (
        "Completion callback attempts by outcome: delivered, retrying, gave_up.",
        ("type", "outcome"),
    ),
    "schedule_runs_total": ("Jobs submitted by a schedule's ticks (not by run now).", ("schedule",)),
    "jobs_held_total": ("Runs held back (the job waits): paused type, concurrency or rate limit.", ("type", "reason")),
    "workflows_started_total": ("Workflows submitted (POST /workflows).", ()),
    "workflows_finished_total": ("Workflows whose nodes have all finished, by outcome.", ("outcome",)),
}
HISTOGRAMS: dict[str, str] = {
    "job_duration_seconds": "Run time of one attempt.",
    "job_wait_seconds": "Time from enqueue to start of a run.",
    "schedule_lag_seconds": "Time from a schedule's tick to the submit of its job.",
}
# The label of each histogram: the job type, or the schedule's name.
HISTOGRAM_LABELS: dict[str, str] = {"schedule_lag_seconds": "schedule"}
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)
RETRY_REASONS = ("auto", "manual", "recovered")
HELD_REASONS = ("paused", "concurrency", "rate")
FINISHED_STATUSES = ("cancelled", "failed", "succeeded")
WORKFLOW_OUTCOMES = ("succeeded", "failed", "cancelled")
WORKERS_KEY = "rq:workers"


def _field(labels: tuple[str, ...]) -> str:
    return LABEL_SEPARATOR.join(labels)


class MetricsBatch:
    """Increments to send together; see `record()`."""

    def __init__(self) -> None:
        self.counts: list[tuple[str, tuple[str, ...], int]] = []
        self.observations: list[tuple[str, str, float]] = []
        self.steps: list[redis_store.PipelineStep] = []

    def also(self, step: redis_store.PipelineStep) -> None:
        """Send other commands in the same round trip (a job lease taken or released with its transition)."""
        self.steps.append(step)

    def inc(self, name: str, *labels: str, amount: int = 1) -> None:
        assert name in COUNTERS and len(labels) == len(COUNTERS[name][1]), name
        self.counts.append((name, labels, amount))

    def observe(self, name: str, job_type: str, seconds: float) -> None:
        """One observation of histogram `name` for `job_type` (or the schedule named so, see HISTOGRAM_LABELS)."""
        assert name in HISTOGRAMS, name
        self.observations.append((name, job_type, max(0.0, seconds)))

    def add_to(self, pipe: Pipeline) -> None:
        totals: Counter[tuple[str, tuple[str, ...]]] = Counter()
        for name, labels, amount in self.counts:
            totals[(name, labels)] += amount
        for (name, labels), amount in totals.items():
            pipe.hincrby(KEY_PREFIX + name, _field(labels), amount)
        # A batch of runs observes many values of few types: one increment per bucket and one sum per type.
        buckets: Counter[tuple[str, str]] = Counter()
        sums: dict[tuple[str, str], float] = {}
        for name, job_type, seconds in self.observations:
            key = KEY_PREFIX + name
            bucket = next(index for index, bound in enumerate(BUCKETS) if seconds <= bound)
            buckets[(key, f"{job_type}{HISTOGRAM_SEPARATOR}{bucket}")] += 1
            sums[(key, job_type)] = sums.get((key, job_type), 0.0) + seconds
        for (key, field), count in buckets.items():
            pipe.hincrby(key, field, count)
        for (key, job_type), total in sums.items():
            pipe.hincrbyfloat(key, f"{job_type}{HISTOGRAM_SEPARATOR}sum", total)
        for step in self.steps:
            step(pipe)


@contextmanager
def record() -> Iterator[MetricsBatch]:
    """Collect increments in the block, then send them in one pipeline."""
    batch = MetricsBatch()
    yield batch
    if not (batch.counts or batch.observations or batch.steps):
        return
    try:
        pipe = redis_store.connection().pipeline(transaction=False)
        batch.add_to(pipe)
        pipe.execute()
    except RedisError as error:
        logger.warning("metrics not recorded, Redis unavailable: %s", error)  # (a lease is written again by its keeper)


def live_worker_count() -> int:
    """Workers registered with RQ whose key has not expired: a SIGKILLed worker stops counting
    when its heartbeat TTL runs out, even before RQ cleans its registry."""
    connection = redis_store.connection()
    names = connection.smembers(WORKERS_KEY)
    if not names:
        return 0
    pipe = connection.pipeline(transaction=False)
    for name in names:
        pipe.exists(name)
    return sum(pipe.execute())


def registry() -> CollectorRegistry:
    """What /metrics exports: this process's metrics, or, under a multi-process server
    (PROMETHEUS_MULTIPROC_DIR set), the sum over its processes; the job metrics either way."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY  # JobMetricsCollector is registered on it at start (JobsConfig.ready)
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
    combined.register(JobMetricsCollector())
    return combined


def _waiting_count() -> int:
    """Jobs in `waiting` (one indexed count; the database is the only place they are)."""
    try:
        return Job.objects.filter(status=JobStatus.WAITING).count()
    except DatabaseError as error:
        logger.warning("jobs_waiting unavailable, database down: %s", error)
        return 0


def _known_types() -> list[str]:
    from .handlers import job_type_names

    return job_type_names()


class JobMetricsCollector:
    """Reads the Redis totals at scrape time; every family appears, at zero, from the start."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        queues = settings.SENTINELFLOW_QUEUES
        names = list(COUNTERS) + list(HISTOGRAMS)
        stored: list[dict[bytes, bytes]] = [{} for _ in names]
        depths: list[int] = [0 for _ in queues]
        workers = 0
        try:
            pipe = redis_store.connection().pipeline(transaction=False)
            for name in names:
                pipe.hgetall(KEY_PREFIX + name)
            for queue in queues:
                pipe.llen(f"rq:queue:{queue}")
            answers = pipe.execute()
            stored = answers[: len(names)]
            depths = answers[len(names) :]
            workers = live_worker_count()
        except RedisError as error:
            logger.warning("job metrics unavailable, Redis down: %s", error)

        types = _known_types()
        # Every schedule has a schedule_runs_total field from its creation (at zero): its histogram follows.
        schedules = [field.decode() for field in stored[list(COUNTERS).index("schedule_runs_total")]]
        for (name, (documentation, label_names)), values in zip(COUNTERS.items(), stored, strict=False):
            yield self._counter(name, documentation, label_names, values, types, queues)
        for (name, documentation), values in zip(HISTOGRAMS.items(), stored[len(COUNTERS) :], strict=False):
            yield self._histogram(name, documentation, values, types, schedules)

        depth = GaugeMetricFamily("jobs_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"])
        for queue, count in zip(queues, depths, strict=True):
            depth.add_metric([queue], count)
        yield depth
        yield GaugeMetricFamily("jobs_workers", "Live RQ workers.", value=workers)
        yield GaugeMetricFamily("jobs_waiting", "Jobs waiting for their parents to finish.", value=_waiting_count())
        yield from self._flow_gauges(queues, types)

    @staticmethod
    def _flow_gauges(queues: list[str], types: list[str]) -> Iterator[Metric]:
        """Paused queues and types (from the database, where the pause is kept) and the jobs held now (Redis)."""
        from .models import JobTypeSettings, QueueState

        # None: unknown (the database did not answer): no samples rather than a false "not paused".
        paused_queues: set[str] | None = None
        paused_types: set[str] | None = None
        held: dict[str, int] = {}
        try:
            paused_queues = set(QueueState.objects.filter(paused=True).values_list("name", flat=True))
            paused_types = set(JobTypeSettings.objects.filter(paused=True).values_list("name", flat=True))
        except Exception as error:  # noqa: BLE001 - a scrape answers whatever fails (DatabaseError, no database at all)
            logger.warning("pause gauges unavailable, the database did not answer: %s", error)
        try:
            held = redis_store.held_counts(types)
        except RedisError as error:
            logger.warning("held gauge unavailable, Redis down: %s", error)
        queue_paused = GaugeMetricFamily("jobs_queue_paused", "1 while the queue is paused.", labels=["queue"])
        if paused_queues is not None:
            for queue in queues:
                queue_paused.add_metric([queue], 1 if queue in paused_queues else 0)
        yield queue_paused
        type_paused = GaugeMetricFamily("jobs_type_paused", "1 while the job type is paused.", labels=["type"])
        held_now = GaugeMetricFamily("jobs_held_now", "Jobs held back now by a pause or a limit.", labels=["type"])
        for job_type in types:
            if paused_types is not None:
                type_paused.add_metric([job_type], 1 if job_type in paused_types else 0)
            held_now.add_metric([job_type], held.get(job_type, 0))
        yield type_paused
        yield held_now

    @staticmethod
    def _counter(
        name: str,
        documentation: str,
        label_names: tuple[str, ...],
        values: dict[bytes, bytes],
        types: list[str],
        queues: Iterable[str],
    ) -> CounterMetricFamily:
        family = CounterMetricFamily(name.removesuffix("_total"), documentation, labels=list(label_names))
        totals: dict[tuple[str, ...], float] = {}
        # Known label combinations first, at zero, so dashboards and alerts see every series.
        for job_type in types:
            if label_names == ("type",):
                totals[(job_type,)] = 0
            elif label_names == ("type", "queue"):
                totals.update({(job_type, queue): 0 for queue in queues})
            elif label_names == ("type", "reason"):
                reasons = HELD_REASONS if name == "jobs_held_total" else RETRY_REASONS
                totals.update({(job_type, reason): 0 for reason in reasons})
            elif label_names == ("type", "status"):
                totals.update({(job_type, status): 0 for status in FINISHED_STATUSES})
        if label_names == ():
            totals[()] = 0
        elif label_names == ("outcome",):
            totals.update({(outcome,): 0 for outcome in WORKFLOW_OUTCOMES})
        for field, count in values.items():
            labels = tuple(field.decode().split(LABEL_SEPARATOR)) if label_names else ()
            totals[labels] = int(count)
        for labels, total in sorted(totals.items()):
            family.add_metric(list(labels), total)
        return family

    @staticmethod
    def _histogram(
        name: str, documentation: str, values: dict[bytes, bytes], types: list[str], schedules: list[str]
    ) -> HistogramMetricFamily:
        label = HISTOGRAM_LABELS.get(name, "type")
        family = HistogramMetricFamily(name, documentation, labels=[label])
        per_type: dict[str, dict[str, float]] = {value: {} for value in (types if label == "type" else schedules)}
        for field, value in values.items():
            job_type, part = field.decode().split(HISTOGRAM_SEPARATOR)
            per_type.setdefault(job_type, {})[part] = float(value)
        for job_type, parts in sorted(per_type.items()):
            cumulative = 0.0
            buckets = []
            for index, bound in enumerate(BUCKETS):
                cumulative += parts.get(str(index), 0)
                buckets.append(("+Inf" if math.isinf(bound) else str(bound), cumulative))
            family.add_metric([job_type], buckets, sum_value=parts.get("sum", 0.0))
        return family
