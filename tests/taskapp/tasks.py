"""A project's own module of `@task` functions, as a team would write it: listed in no setting.

The tests enqueue these from `manage.py shell`, from a view (tests.taskapp.views) and in-process, and run
them on sentinelflow's workers (jobs.backends.SentinelflowBackend is the default TASKS backend).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

# As a project on either Django writes it: Django 6 has the Tasks API, 5.2 has the `django-tasks` backport.
try:
    from django.tasks import TaskContext, task
except ImportError:
    from django_tasks import TaskContext, task


class TaskAppError(Exception):
    """What `fail` raises: the TaskResult's error names this class."""


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def fail(message: str) -> None:
    raise TaskAppError(message)


@task(takes_context=True)
def whoami(context: TaskContext, label: str) -> dict[str, object]:
    return {"label": label, "job_id": context.task_result.id, "attempt": context.attempt}


@task(takes_context=True)
def flaky(context: TaskContext, succeed_on: int) -> int:
    """Fails its attempts before `succeed_on`, then returns the attempt it succeeded on."""
    if context.attempt < succeed_on:
        raise TaskAppError(f"attempt {context.attempt} fails")
    return context.attempt


@task(takes_context=True)
def slow_first_time(context: TaskContext, seconds: float) -> int:
    """Sleeps on its first attempt only (a worker killed then loses that run); returns the attempt."""
    if context.attempt == 1:
        time.sleep(seconds)
    return context.attempt


@task
def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "rested"


@task
def clock() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@task
def not_json() -> object:
    return dt.date(2026, 1, 1)


@task
async def async_add(a: int, b: int) -> int:
    return a + b


@task(priority=50)
def urgent(label: str) -> str:
    return label


@task(priority=-50)
def background(label: str) -> str:
    return label


def plain_function(path: str) -> None:
    """Not a task: a job naming it must never run it (it would leave a file behind)."""
    Path(path).write_text("ran")


@task
def touch(path: str) -> str:
    Path(path).write_text("ran")
    return path


@task
def total_of_parents() -> int:
    """Sums its parents' results (enqueued with jobs.backends.enqueue_after)."""
    from jobs.handlers import parent_results

    return sum(parent_results()[key] for key in parent_results())
