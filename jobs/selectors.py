"""Reads of jobs: lookups and the list filters."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import django_filters
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import BooleanField, Count, Max, Min, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import TruncMinute
from django.utils import timezone
from redis.exceptions import RedisError
from rest_framework import exceptions as drf_exceptions
from rq import Worker

from . import redis_store
from .exceptions import JobNotFound, WorkflowNotFound
from .handlers import job_type_names
from .handlers.django_task import is_task_path
from .models import TERMINAL_STATUSES, Job, JobDependency, JobStatus, Workflow


def job_get(*, job_id: str) -> Job:
    try:
        return Job.objects.get(job_id=job_id)
    except (Job.DoesNotExist, ValueError, ValidationError):  # a malformed UUID is "not found" too
        raise JobNotFound() from None


def job_list() -> QuerySet[Job]:
    return Job.objects.all()


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):  # type: ignore[misc]  # django-filter is untyped
    """An ISO 8601 filter compared in UTC: ISO allows offsets up to ±24 h, PostgreSQL only ±16 h."""

    def __init__(self, *args: Any, param: str, **kwargs: Any) -> None:
        self.param = param
        super().__init__(*args, **kwargs)

    def filter(self, qs: QuerySet[Job], value: datetime | None) -> QuerySet[Job]:
        if value is not None:
            try:
                value = value.astimezone(dt.UTC)
            except OverflowError:
                raise drf_exceptions.ValidationError({self.param: ["Date out of range."]}) from None
        filtered: QuerySet[Job] = super().filter(qs, value)
        return filtered


class JobTypeField(forms.CharField):
    """A registered job type, or the dotted path of a Django task (whose jobs have it as their type)."""

    def validate(self, value: Any) -> None:
        super().validate(value)
        if value and value not in job_type_names() and not is_task_path(value):
            # Params, not an f-string: the message is %-formatted later, and a value may hold a "%".
            raise ValidationError(
                "Unknown job type %(value)r: a registered type (%(names)s) or a task's dotted path.",
                params={"value": value, "names": ", ".join(job_type_names())},
            )


class JobTypeFilter(django_filters.CharFilter):  # type: ignore[misc]  # django-filter is untyped
    field_class = JobTypeField


# Tags, metadata and payload fields (?tag=a&tag=b, ?metadata.region=eu, ?payload.customer_id=42).
LABEL_COLUMNS = ("metadata", "payload")
# A key is a plain name: no dots (metadata.a.b is refused, not read as a path), no "__" (never an ORM lookup).
LABEL_KEY = re.compile(r"\A[A-Za-z][A-Za-z0-9_-]{0,63}\Z")
MAX_LABEL_VALUE = 256
MAX_LABEL_FILTERS = 10
INTEGER = re.compile(r"\A-?[0-9]{1,18}\Z")
DECIMAL = re.compile(r"\A-?[0-9]{1,18}\.[0-9]{1,18}\Z")


@dataclass(frozen=True)
class LabelFilters:
    """Parsed tag, metadata and payload filters: all must hold."""

    tags: tuple[str, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()  # (column, key, value as given)

    def __bool__(self) -> bool:
        return bool(self.tags or self.fields)


def is_label_param(name: str) -> bool:
    return name == "tag" or ("." in name and name.partition(".")[0] in LABEL_COLUMNS)


def label_filters(params: Iterable[tuple[str, str]]) -> LabelFilters:
    """The tag, metadata and payload filters among query `params` (name, value); others are left alone.

    A bad one is a 400 naming the parameter (its name cut to 100 characters). An empty value is no filter.
    """
    tags: list[str] = []
    fields: list[tuple[str, str, str]] = []
    for name, value in params:
        if not is_label_param(name):
            continue
        shown = name[:100]
        if len(value) > MAX_LABEL_VALUE or not value.isprintable():
            raise drf_exceptions.ValidationError({shown: [f"Use at most {MAX_LABEL_VALUE} printable characters."]})
        if name != "tag":
            column, _, key = name.partition(".")
            if not LABEL_KEY.match(key) or "__" in key:
                raise drf_exceptions.ValidationError(
                    {shown: [f"{column}.<key>: a key is a letter, then up to 63 letters, digits, '_' or '-'."]}
                )
        if value == "":
            continue
        if name == "tag":
            tags.append(value)
        else:
            fields.append((column, key, value))
    if len(tags) + len(fields) > MAX_LABEL_FILTERS:
        raise drf_exceptions.ValidationError(
            {"tag": [f"At most {MAX_LABEL_FILTERS} tag, metadata and payload filters together."]}
        )
    return LabelFilters(tags=tuple(dict.fromkeys(tags)), fields=tuple(fields))


def _candidates(value: str) -> list[Any]:
    """What a query string value may stand for in JSON: itself, and a number or boolean it spells."""
    found: list[Any] = [value]
    if value in ("true", "false"):
        found.append(value == "true")
    elif INTEGER.match(value):
        found.append(int(value))
    elif DECIMAL.match(value):
        found.append(float(value))
    return found


def filter_by_labels(queryset: QuerySet[Job], filters: LabelFilters) -> QuerySet[Job]:
    """Jobs with every tag and every metadata or payload value of `filters`.

    On PostgreSQL each is a JSONB containment (@>), which the GIN indexes of migration 0008 answer; on
    SQLite the same tests read the JSON (json_each, json_extract) row by row.
    """
    postgres = connection.vendor == "postgresql"
    if filters.tags:
        if postgres:
            queryset = queryset.filter(tags__contains=list(filters.tags))
        else:
            table = connection.ops.quote_name(Job._meta.db_table)
            for index, tag in enumerate(filters.tags):
                exists = RawSQL(
                    f"EXISTS (SELECT 1 FROM json_each({table}.tags) WHERE json_each.value = %s)",
                    (tag,),
                    output_field=BooleanField(),
                )
                queryset = queryset.alias(**{f"_tag_{index}": exists}).filter(**{f"_tag_{index}": True})
    for index, (column, key, value) in enumerate(filters.fields):
        if postgres:
            match = Q()
            for candidate in _candidates(value):
                match |= Q(**{f"{column}__contains": {key: candidate}})
            queryset = queryset.filter(match)
        else:
            alias = f"_{column}_{index}"
            match = Q()
            for candidate in _candidates(value):
                match |= Q(**{alias: candidate})
            queryset = queryset.alias(**{alias: KeyTransform(key, column)}).filter(match)
    return queryset


def job_filtered(params: Any, queryset: QuerySet[Job] | None = None) -> QuerySet[Job]:
    """The jobs that the list's query parameters (a QueryDict) select: GET /jobs and the bulk actions."""
    filterset = JobFilter(data=params, queryset=job_list() if queryset is None else queryset)
    if not filterset.is_valid():
        raise drf_exceptions.ValidationError(filterset.errors)
    filtered: QuerySet[Job] = filterset.qs
    return filtered


class JobFilter(django_filters.FilterSet):  # type: ignore[misc]  # django-filter is untyped
    """GET /jobs filters; an unknown value is a 400 naming the parameter. Tags, metadata and payload
    fields are filtered by filter_by_labels (their names are not fixed: metadata.<key>)."""

    status = django_filters.ChoiceFilter(choices=JobStatus.choices)
    type = JobTypeFilter()
    queue = django_filters.ChoiceFilter(choices=lambda: [(name, name) for name in settings.SENTINELFLOW_QUEUES])
    schedule = django_filters.CharFilter(max_length=64)
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte", param="created_after")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt", param="created_before")

    class Meta:
        model = Job
        fields = ["status", "type", "queue", "schedule", "created_after", "created_before"]

    def filter_queryset(self, queryset: QuerySet[Job]) -> QuerySet[Job]:
        queryset = super().filter_queryset(queryset)
        pairs = ((name, value) for name in self.data for value in self.data.getlist(name))
        filters = label_filters(pairs)
        return filter_by_labels(queryset, filters) if filters else queryset


DASHBOARD_WINDOW_MINUTES = 60
DASHBOARD_DURATION_SAMPLE = 10_000
RECENT_FAILURES = 10


def dashboard_figures() -> dict[str, Any]:
    """What the operator dashboard shows: queues, workers, the last hour's throughput, p95s, failures."""
    since = timezone.now() - timedelta(minutes=DASHBOARD_WINDOW_MINUTES)
    per_minute = _finished_per_minute(since)
    peak = max([max(point["succeeded"], point["failed"]) for point in per_minute] + [1])
    for point in per_minute:  # bar geometry for the dashboard's 120-unit-high SVG chart
        point["ok_h"] = round(110 * point["succeeded"] / peak, 1)
        point["bad_h"] = round(110 * point["failed"] / peak, 1)
        point["ok_y"], point["bad_y"] = 115 - point["ok_h"], 115 - point["bad_h"]
    return {
        "queues": _queue_depths(),
        "workers": _workers(),
        "per_minute": per_minute,
        "peak_per_minute": peak if any(p["succeeded"] or p["failed"] for p in per_minute) else 0,
        "finished_last_hour": sum(p["succeeded"] + p["failed"] for p in per_minute),
        "failed_last_hour": sum(p["failed"] for p in per_minute),
        "p95_by_type": _p95_run_time_by_type(since),
        "recent_failures": list(
            Job.objects.filter(status=JobStatus.FAILED).order_by("-finished_at", "-id")[:RECENT_FAILURES]
        ),
        "generated_at": timezone.now(),
    }


def _queue_depths() -> list[dict[str, Any]]:
    try:
        return [{"name": queue.name, "depth": queue.count} for queue in redis_store.queues()]
    except RedisError:
        return [{"name": name, "depth": None} for name in settings.SENTINELFLOW_QUEUES]


def _workers() -> list[dict[str, Any]]:
    try:
        workers = Worker.all(connection=redis_store.connection())
    except RedisError:
        return []
    return sorted(
        (
            {
                "name": worker.name,
                "state": worker.get_state(),
                "current_job_id": worker.get_current_job_id(),
                "last_heartbeat": worker.last_heartbeat,
                "queues": ", ".join(worker.queue_names()),
            }
            for worker in workers
        ),
        key=lambda row: row["name"],
    )


def _finished_per_minute(since: datetime) -> list[dict[str, Any]]:
    """Jobs succeeded and failed in each of the last 60 minutes (minutes with none included, at zero)."""
    counts = (
        Job.objects.filter(finished_at__gte=since, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED])
        .annotate(minute=TruncMinute("finished_at"))
        .values("minute", "status")
        .annotate(count=Count("id"))
    )
    by_minute: dict[datetime, dict[str, int]] = {}
    for row in counts:
        by_minute.setdefault(row["minute"], {})[row["status"]] = row["count"]
    first = since.replace(second=0, microsecond=0) + timedelta(minutes=1)
    series = []
    for offset in range(DASHBOARD_WINDOW_MINUTES):
        minute = first + timedelta(minutes=offset)
        values = by_minute.get(minute, {})
        series.append(
            {
                "minute": minute,
                "succeeded": values.get(JobStatus.SUCCEEDED, 0),
                "failed": values.get(JobStatus.FAILED, 0),
            }
        )
    return series


def _p95_run_time_by_type(since: datetime) -> list[dict[str, Any]]:
    rows = (
        Job.objects.filter(finished_at__gte=since, started_at__isnull=False)
        .order_by("-finished_at")
        .values_list("type", "started_at", "finished_at")[:DASHBOARD_DURATION_SAMPLE]
    )
    durations: dict[str, list[float]] = {}
    for job_type, started_at, finished_at in rows:
        if started_at is not None and finished_at is not None:  # both, by the filter
            durations.setdefault(job_type, []).append((finished_at - started_at).total_seconds())
    result = []
    for job_type, values in sorted(durations.items()):
        values.sort()
        p95 = values[min(len(values) - 1, math.ceil(0.95 * len(values)) - 1)]
        result.append({"type": job_type, "p95": p95, "runs": len(values)})
    return result


# --------------------------------------------------------------------------- flow control (GET /types, /queues)


def job_types_overview() -> list[dict[str, Any]]:
    """Every registered job type with its flow control in effect, what was declared, and the jobs held now."""
    from .handlers import REGISTRY
    from .handlers.flow import policy
    from .models import JobTypeSettings

    rows = {row.name: row for row in JobTypeSettings.objects.all()}
    names = job_type_names()
    try:
        held = redis_store.held_counts(names)
    except RedisError:
        held = {}
    overview = []
    for name in names:
        row, declared = rows.get(name), REGISTRY[name]
        effective = policy(name, row)
        overview.append(
            {
                "name": name,
                "max_concurrency": effective.max_concurrency,
                "rate": effective.rate,
                "limit_by": effective.limit_by,
                "paused": effective.paused,
                "held": held.get(name),
                "declared": {"max_concurrency": declared.max_concurrency, "rate": declared.rate},
                "overridden": sorted(
                    field
                    for field, flag in (
                        ("max_concurrency", row and row.max_concurrency_overridden),
                        ("rate", row and row.rate_overridden),
                    )
                    if flag
                ),
                "updated_at": row.updated_at if row else None,
            }
        )
    return overview


def held_count(job_type: str) -> int | None:
    try:
        return redis_store.held_counts([job_type]).get(job_type)
    except RedisError:
        return None


def job_type_overview(name: str) -> dict[str, Any] | None:
    return next((entry for entry in job_types_overview() if entry["name"] == name), None)


def queues_overview() -> list[dict[str, Any]]:
    """Each configured queue: depth, paused, the age of the job at its head, live workers listening, jobs scheduled
    (run_at, retries, held back by a limit). Redis down: the Redis numbers are null."""
    from rq.worker_registration import get_keys

    from .models import QueueState

    paused = set(QueueState.objects.filter(paused=True).values_list("name", flat=True))
    client = redis_store.connection()
    overview = []
    for name in settings.SENTINELFLOW_QUEUES:
        entry: dict[str, Any] = {"name": name, "paused": name in paused}
        try:
            queue = redis_store.queue(name)
            pipe = client.pipeline(transaction=False)
            pipe.llen(queue.key)
            pipe.lindex(queue.key, 0)
            pipe.zcard(queue.scheduled_job_registry.key)
            depth, head, scheduled = pipe.execute()
            enqueued = client.hget(f"rq:job:{bytes(head).decode()}", "enqueued_at") if head else None
            workers = list(get_keys(queue, connection=client))
            pipe = client.pipeline(transaction=False)
            for key in workers:
                pipe.exists(key)
            live = sum(pipe.execute()) if workers else 0
            age = None
            if enqueued:
                text = enqueued.decode() if isinstance(enqueued, bytes) else str(enqueued)
                since = datetime.fromisoformat(text.replace("Z", "+00:00"))
                since = since if since.tzinfo else since.replace(tzinfo=dt.UTC)
                age = max(0.0, round((timezone.now() - since).total_seconds(), 3))
            entry.update(depth=depth, oldest_age_seconds=age, workers=live, scheduled=scheduled)
        except (RedisError, ValueError):
            entry.update(depth=None, oldest_age_seconds=None, workers=None, scheduled=None)
        overview.append(entry)
    return overview


# --------------------------------------------------------------------------- failure groups


def failure_groups(*, job_type: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Failed jobs grouped by type and error fingerprint, the most recent group first.

    Each group: type, fingerprint, count, first_seen, last_seen (finish times), and the newest
    failure's job id, error summary (its last line) and traceback. Two queries: the GROUP BY (on the
    job_failure_group index) and the newest job of each group.
    """
    failed = Job.objects.filter(status=JobStatus.FAILED).exclude(error_fingerprint="")
    if job_type:
        failed = failed.filter(type=job_type)
    rows = list(
        failed.values("type", "error_fingerprint")
        .annotate(count=Count("id"), first_seen=Min("finished_at"), last_seen=Max("finished_at"), newest=Max("id"))
        .order_by("-last_seen", "type", "error_fingerprint")[:limit]
    )
    samples = Job.objects.only("job_id", "error").in_bulk([row["newest"] for row in rows])
    groups = []
    for row in rows:
        sample = samples.get(row["newest"])
        groups.append(
            {
                "type": row["type"],
                "fingerprint": row["error_fingerprint"],
                "count": row["count"],
                "first_seen": row["first_seen"],
                "last_seen": row["last_seen"],
                "sample_job_id": sample.job_id if sample else None,
                "sample_error": sample.error_summary if sample else "",
                "sample_traceback": sample.error if sample else "",
            }
        )
    return groups


def failure_group_jobs(*, job_type: str, fingerprint: str) -> QuerySet[Job]:
    """The failed jobs of one failure group."""
    return Job.objects.filter(status=JobStatus.FAILED, type=job_type, error_fingerprint=fingerprint)


# --------------------------------------------------------------------------- job graphs


def workflow_get(*, workflow_id: str) -> Workflow:
    try:
        return Workflow.objects.get(workflow_id=workflow_id)
    except (Workflow.DoesNotExist, ValueError, ValidationError):
        raise WorkflowNotFound() from None


def workflow_nodes(workflow: Workflow) -> list[Job]:
    """The workflow's jobs, parents first (they were stored in that order), each with `parent_names`."""
    jobs = list(Job.objects.filter(workflow=workflow).order_by("id"))
    names = {job.pk: job.node for job in jobs}
    parents: dict[int, list[int]] = {job.pk: [] for job in jobs}
    for child, parent in JobDependency.objects.filter(child_id__in=names).values_list("child_id", "parent_id"):
        parents[child].append(parent)
    for job in jobs:
        # Rendered with the node (the API's `after`, the admin's graph).
        job.parent_pks = parents[job.pk]  # type: ignore[attr-defined]
        job.parent_names = [names.get(parent, "") for parent in parents[job.pk]]  # type: ignore[attr-defined]
    return jobs


def workflow_status(statuses: list[str]) -> str:
    """running while a node has not finished; then failed (a node failed), cancelled, or succeeded."""
    if any(status not in TERMINAL_STATUSES for status in statuses):
        return "running"
    if JobStatus.FAILED in statuses:
        return "failed"
    if JobStatus.CANCELLED in statuses:
        return "cancelled"
    return "succeeded"


def workflow_summary(workflow: Workflow, jobs: list[Job]) -> dict[str, Any]:
    """Overall status, counts per status, progress (finished nodes over all)."""
    statuses = [job.status for job in jobs]
    counts = {status: statuses.count(status) for status in JobStatus.values if status in statuses}
    finished = sum(1 for status in statuses if status in TERMINAL_STATUSES)
    return {
        "status": workflow_status(statuses),
        "counts": counts,
        "progress": round(finished / len(jobs), 4) if jobs else 1.0,
        "finished_at": max((job.finished_at for job in jobs if job.finished_at), default=None)
        if finished == len(jobs)
        else None,
    }


def job_parents(job: Job) -> list[Job]:
    return list(Job.objects.filter(child_links__child=job).order_by("id"))


def job_children(job: Job) -> list[Job]:
    return list(Job.objects.filter(parent_links__parent=job).order_by("id"))


class ParentResults(Mapping[str, Any]):
    """A running job's parents' results, by node name and by job id (context.parents); read on first use,
    so a job without parents costs nothing."""

    def __init__(self, job_pk: int) -> None:
        self.job_pk = job_pk
        self._results: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._results is None:
            rows = Job.objects.filter(child_links__child_id=self.job_pk).values_list("job_id", "node", "result")
            results: dict[str, Any] = {}
            for job_id, node, result in rows:
                results[str(job_id)] = result
                if node:
                    results[node] = result
            self._results = results
        return self._results

    def __getitem__(self, key: str) -> Any:
        return self._load()[str(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def job_wait(*, job_id: str, seconds: float, poll: float = 0.05) -> Job:
    """The job, read again every `poll` seconds until it has finished or `seconds` have passed (?wait=)."""
    deadline = time.monotonic() + seconds
    job = job_get(job_id=job_id)
    while not job.is_terminal and time.monotonic() < deadline:
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        job = job_get(job_id=job_id)
    return job


def workflow_wait(*, workflow_id: str, seconds: float, poll: float = 0.05) -> tuple[Workflow, list[Job]]:
    """The workflow and its nodes, read again every `poll` seconds until all have finished or `seconds` pass."""
    deadline = time.monotonic() + seconds
    workflow = workflow_get(workflow_id=workflow_id)
    while True:
        jobs = workflow_nodes(workflow)
        if all(job.is_terminal for job in jobs) or time.monotonic() >= deadline:
            return workflow, jobs
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
