"""sentinelflow as a backend of Django's Tasks API (`django.tasks` on Django 6, the `django-tasks` backport on 5.2).

    TASKS = {"default": {"BACKEND": "jobs.backends.SentinelflowBackend"}}

`my_task.enqueue(*args, **kwargs)` submits a job through jobs.services, as POST /jobs does: a durable
row first, the RQ push after the transaction commits. The job's type is the task's dotted path, its
payload {"args": [...], "kwargs": {...}}, its id the TaskResult's id; `get_result(id)` reads the row.
From there the task is a job like any other (API, admin, retries, cancel, the sentinel, /metrics).

How the Tasks API's options map (docs/design.md, "Django tasks"):
- `queue_name`: a sentinelflow queue (QUEUES by default; the backend's "QUEUES" may narrow them).
  An unknown one is an InvalidTask when the task is declared or `.using()` names it.
- `priority` (-100..100): tasks on the "default" queue go to the first (highest) queue when their
  priority is above 0 and to the last (lowest) when it is below 0; on any other queue the queue decides.
- `run_after`: the job's run_at (a `scheduled` job).
- retries and timeout: the Tasks API has no such options; OPTIONS "MAX_RETRIES" and "TIMEOUT" set them
  per backend alias (default DEFAULT_MAX_RETRIES and DEFAULT_JOB_TIMEOUT): a task that must run at most
  once uses an alias with MAX_RETRIES 0 (`@task(backend="once")`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import services
from .exceptions import JobNotFound
from .handlers.django_task import MAX_TASK_PATH, json_value, resolve_task, task_result_for
from .handlers.task_api import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    task_enqueued,
)
from .models import Job
from .selectors import job_get

DEFAULT_QUEUE = "default"
# As for POST /jobs's max_retries.
MAX_RETRIES_LIMIT = 100


class SentinelflowBackend(BaseTaskBackend):
    """Runs Django tasks as sentinelflow jobs (see the module docstring)."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.queues = set(params.get("QUEUES") or settings.SENTINELFLOW_QUEUES)
        unknown = sorted(self.queues - set(settings.SENTINELFLOW_QUEUES))
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['QUEUES'] names {', '.join(unknown)}, not in QUEUES "
                f"({', '.join(settings.SENTINELFLOW_QUEUES)})"
            )
        # Highest priority first, as QUEUES lists them.
        self.ordered_queues = [name for name in settings.SENTINELFLOW_QUEUES if name in self.queues]
        self.max_retries: int | None = self.options.get("MAX_RETRIES")
        self.timeout: int | None = self.options.get("TIMEOUT")
        self.actor = f"tasks:{alias}"

    def validate_task(self, task: Task[Any, Any]) -> None:
        """The Tasks API's own checks (module-level function, context argument, priority range, queue,
        aware run_after), and a path that fits a job's type."""
        super().validate_task(task)
        if len(task.module_path) > MAX_TASK_PATH:
            raise InvalidTask(
                f"Task path {task.module_path!r} is longer than {MAX_TASK_PATH} characters, the longest job type"
            )

    def enqueue(
        self,
        task: Task[Any, Any],
        args: Any,
        kwargs: Any,
        *,
        after: list[str] | None = None,
        allow_failure: bool = False,
    ) -> TaskResult[Any]:
        """Store the task as a job and queue it once the transaction commits; its TaskResult, READY (or,
        with `after` job ids, waiting for those jobs: see enqueue_after).

        Arguments that are not JSON are a TypeError here, and nothing is stored.
        """
        self.validate_task(task)
        payload = {
            "args": json_value(list(args), what=f"the arguments of task {task.module_path!r}"),
            "kwargs": json_value(dict(kwargs), what=f"the keyword arguments of task {task.module_path!r}"),
        }
        job, _ = services.job_submit(
            type=task.module_path,
            payload=payload,
            queue=self.queue_for(task),
            max_retries=self.max_retries,
            timeout=self.timeout,
            run_at=task.run_after,
            submitted_by=self.actor,
            depends_on=after,
            allow_failure=allow_failure,
        )
        result = task_result_for(job, task=task, backend=self.alias)
        task_enqueued.send(type(self), task_result=result)
        return result

    def queue_for(self, task: Task[Any, Any]) -> str:
        """The sentinelflow queue of a task: its queue_name, moved by its priority when that is "default"."""
        if task.queue_name != DEFAULT_QUEUE or task.priority == 0:
            return task.queue_name
        return self.ordered_queues[0] if task.priority > 0 else self.ordered_queues[-1]

    def get_result(self, result_id: str) -> TaskResult[Any]:
        """The TaskResult of the task job `result_id`, read from its row; TaskResultDoesNotExist when there
        is no such job, or it is not a task's."""
        try:
            job: Job = job_get(job_id=result_id)
        except JobNotFound:
            raise TaskResultDoesNotExist(result_id) from None
        try:
            return task_result_for(job, task=resolve_task(job.type), backend=self.alias)
        except services.PermanentJobError as error:  # not a task's job, or not one this process can import
            raise TaskResultDoesNotExist(f"{result_id}: {error}") from None

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = list(super().check(**kwargs))
        for name, low, high in (
            ("MAX_RETRIES", 0, MAX_RETRIES_LIMIT),
            ("TIMEOUT", 1, settings.SENTINELFLOW_MAX_TIMEOUT),
        ):
            value = self.options.get(name)
            if value is not None and (type(value) is not int or not low <= value <= high):
                messages.append(
                    checks.Error(
                        f"TASKS[{self.alias!r}]['OPTIONS'][{name!r}] must be a whole number from {low} to {high},"
                        f" not {value!r}",
                        id="jobs.E101",
                    )
                )
        return messages


def enqueue_after(
    parents: list[Any], task: Task[Any, Any], *args: Any, allow_failure: bool = False, **kwargs: Any
) -> TaskResult[Any]:
    """Enqueue `task(*args, **kwargs)` to run once `parents` (TaskResults or job ids) have finished; the Tasks
    API has no dependencies, so this is sentinelflow's own call. The task reads their results with
    `jobs.handlers.parent_results()`. A failed or cancelled parent cancels it unless `allow_failure`."""
    backend = task.get_backend()
    if not isinstance(backend, SentinelflowBackend):
        raise InvalidTask(f"enqueue_after needs the sentinelflow backend; {task.module_path!r} uses {backend.alias!r}")
    ids = [str(getattr(parent, "id", parent)) for parent in parents]
    return backend.enqueue(task, args, kwargs, after=ids, allow_failure=allow_failure)
