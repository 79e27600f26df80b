"""Django tasks as job types: a job whose type is the dotted path of a `@task` function.

jobs.backends.SentinelflowBackend stores `my_task.enqueue(*args, **kwargs)` as a job of type
`my_task.module_path` with the payload {"args": [...], "kwargs": {...}}. No registration: the
worker imports the path when it runs the job, and runs it only when what it finds there IS a
Task object of Django's Tasks API (never an arbitrary callable named in a row), at the very path
the task calls its own. The API takes no such types (see jobs.handlers.registered_job_type): only
the backend, which is the project's own code, stores them.

This module also maps a job's row to the TaskResult that `get_result` answers (statuses, errors,
the workers of its attempts), both for the backend and for a task's `context`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.utils.module_loading import import_string
from rest_framework import serializers

from ..exceptions import PermanentJobError
from ..models import Job, JobEvent, JobStatus
from .task_api import Task, TaskContext, TaskError, TaskResult, TaskResultStatus, normalize_json

# A dotted path of Python identifiers with at least one dot (`myapp.tasks.add`); nothing else is imported.
TASK_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
# Job.type's length: a task whose path is longer is refused when it is declared (SentinelflowBackend).
MAX_TASK_PATH = Job._meta.get_field("type").max_length or 64

# sentinelflow's statuses as the Tasks API sees them. The API has no "cancelled": a cancelled job is
# FAILED (its errors say it was cancelled), as it would be for a task that could not run.
STATUS_TO_TASK = {
    JobStatus.PENDING: TaskResultStatus.READY,
    JobStatus.WAITING: TaskResultStatus.READY,
    JobStatus.SCHEDULED: TaskResultStatus.READY,
    JobStatus.QUEUED: TaskResultStatus.READY,
    JobStatus.RETRYING: TaskResultStatus.READY,
    JobStatus.STARTED: TaskResultStatus.RUNNING,
    JobStatus.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    JobStatus.FAILED: TaskResultStatus.FAILED,
    JobStatus.CANCELLED: TaskResultStatus.FAILED,
}
# And back: the sentinelflow statuses that one Tasks API status stands for (to filter jobs by it).
TASK_TO_STATUSES = {
    task_status: frozenset(status for status, mapped in STATUS_TO_TASK.items() if mapped == task_status)
    for task_status in TaskResultStatus
}

# The exception class path of the TaskError of a job cancelled before any attempt failed.
CANCELLED_ERROR_CLASS = "jobs.exceptions.JobCancelled"


class TaskPayload(serializers.Serializer[Any]):
    """A task job's payload: the task's positional and keyword arguments (JSON)."""

    args = serializers.ListField(required=False, default=list)
    kwargs = serializers.DictField(required=False, default=dict)


def is_task_path(name: str) -> bool:
    return TASK_PATH.fullmatch(name) is not None


def resolve_task(path: str) -> Task[Any, Any]:
    """The Task object at `path`; PermanentJobError, saying why, when there is none.

    Only a Task instance of the Tasks API in use runs: a plain function, a class, `os.system` or
    anything else found at the path is refused without being called.
    """
    if not is_task_path(path):
        raise PermanentJobError(f"{path!r} is not a dotted path to a task")
    try:
        found = import_string(path)
    except Exception as error:  # any failure to import the task's module is this job's error
        raise PermanentJobError(f"task {path!r} cannot be imported: {error!r}") from error
    if not isinstance(found, Task):
        raise PermanentJobError(
            f"{path!r} is not a task (a {type(found).__module__}.{type(found).__qualname__}, not a @task function);"
            " it was not run"
        )
    if found.module_path != path:
        # Another name for a task defined elsewhere: jobs of one task have one type (its own path).
        raise PermanentJobError(f"{path!r} is the task {found.module_path!r}; enqueue it under its own path")
    return found


def task_arguments(payload: Any) -> tuple[list[Any], dict[str, Any]]:
    """The args and kwargs stored in a task job's payload."""
    if not isinstance(payload, dict) or set(payload) - {"args", "kwargs"}:
        raise PermanentJobError("a task job's payload is {'args': [...], 'kwargs': {...}}")
    args, kwargs = payload.get("args", []), payload.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise PermanentJobError("a task job's payload is {'args': [...], 'kwargs': {...}}")
    return args, kwargs


def json_value(value: Any, *, what: str) -> Any:
    """`value` as JSON stores it (tuples become lists); TypeError naming `what` when it is not JSON."""
    try:
        normalized = normalize_json(value)
        json.dumps(normalized, allow_nan=False)  # PostgreSQL's jsonb has no NaN or Infinity
    except (TypeError, ValueError) as error:
        kinds = "str, int, float, bool, None, lists and dicts of them"
        raise TypeError(f"{what} must be JSON ({kinds}): {error}") from None
    return normalized


def run_task(path: str, payload: dict[str, Any], job_id: str, attempt: int) -> Any:
    """Run one attempt of the task job `job_id`: call the task with its stored arguments (and its context
    when it takes one) and return its result as JSON. A result that is not JSON fails the job
    (PermanentJobError: running it again would give the same result)."""
    task = resolve_task(path)
    args, kwargs = task_arguments(payload)
    if task.takes_context:
        # The worker may record a run's start only once the run has lasted a while: the attempt is the
        # worker's (from the JobContext), the rest is the row's.
        running = task_result_for(Job.objects.get(job_id=job_id), task=task, running_attempt=attempt)
        value = task.call(TaskContext(task_result=running), *args, **kwargs)
    else:
        value = task.call(*args, **kwargs)
    try:
        return json_value(value, what=f"the result of task {path!r}")
    except TypeError as error:
        raise PermanentJobError(str(error)) from None


def task_result_for(
    job: Job, *, task: Task[Any, Any], backend: str | None = None, running_attempt: int | None = None
) -> TaskResult[Any]:
    """The TaskResult of the task job `job`, as its row says now; with `running_attempt`, as the task sees
    itself while that attempt runs (RUNNING, `attempts` = that attempt)."""
    args, kwargs = task_arguments(job.payload)
    running = running_attempt is not None
    result: TaskResult[Any] = TaskResult(
        task=task,
        id=str(job.job_id),
        status=TaskResultStatus.RUNNING if running else STATUS_TO_TASK[JobStatus(job.status)],
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        finished_at=job.finished_at if job.is_terminal and not running else None,
        last_attempted_at=job.started_at,
        args=args,
        kwargs=kwargs,
        backend=backend or task.backend,
        errors=task_errors(job),
        worker_ids=worker_ids(job, attempts=running_attempt),
    )
    if job.status == JobStatus.SUCCEEDED:
        object.__setattr__(result, "_return_value", job.result)  # a frozen dataclass, as the API's backends do
    return result


def worker_ids(job: Job, *, attempts: int | None = None) -> list[str]:
    """The workers of the job's attempts (or of its first `attempts`), oldest first: one per attempt,
    as TaskContext.attempt and TaskResult.attempts count them."""
    attempts = job.attempts if attempts is None else attempts
    names = [
        actor.removeprefix("worker:")
        for actor in JobEvent.objects.filter(job=job, to_status=JobStatus.STARTED)
        .order_by("at", "id")
        .values_list("actor", flat=True)
    ]
    names = names[:attempts]
    # A start whose timeline row is missing (or not written yet) still counts as an attempt.
    return names + ["worker"] * (attempts - len(names))


def task_errors(job: Job) -> list[TaskError]:
    """The job's error as TaskErrors: sentinelflow keeps the last attempt's error (class and traceback)."""
    errors = []
    if job.error:
        errors.append(TaskError(exception_class_path=exception_class_path(job.error), traceback=job.error))
    if job.status == JobStatus.CANCELLED:
        errors.append(TaskError(exception_class_path=CANCELLED_ERROR_CLASS, traceback="The job was cancelled."))
    return errors


def exception_class_path(error: str) -> str:
    """The dotted path of the exception class in a traceback stored by jobs.services.format_error.

    The exception's header is the first unindented line after the last "Traceback" line (with
    chained exceptions, the last traceback is the one raised); a builtin exception has no module in
    it. An error that is not a traceback (a lost run, written by the sentinel) is a RuntimeError.
    """
    lines = error.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    after = lines[starts[-1] + 1 :] if starts else lines[:1]
    header = next((line for line in after if line and not line[0].isspace()), "")
    name = header.split(":", 1)[0].strip()
    if not (name.isidentifier() or TASK_PATH.fullmatch(name)):
        return "builtins.RuntimeError"
    return name if "." in name else f"builtins.{name}"
