"""django-tasks with its database backend: `db_worker`, with `--batch` (take every waiting task, then exit)
for the drain, and as a long-running poller (every second, its default) for latency."""

from __future__ import annotations

import sys

NAME = "django-tasks"
COMMANDS = 2  # worker_argv started twice: 2 worker processes
WORKER = "db_worker --batch (drain), db_worker (latency)"
BULK = None  # django-tasks has no bulk enqueue


def worker_argv(*, drain: bool) -> list[str]:
    argv = [sys.executable, "-m", "django", "db_worker", "--no-startup-delay", "--no-reload"]
    return argv + (["--batch"] if drain else [])


def enqueue_noop() -> None:
    from bench.peers.djtasks.tasks import noop

    noop.enqueue()


def enqueue_stamp(sent: float) -> None:
    from bench.peers.djtasks.tasks import stamp

    stamp.enqueue(sent)


def done() -> int:
    from django_tasks.base import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.filter(status=TaskResultStatus.SUCCESSFUL).count()


def discard_waiting() -> int:
    """Delete the tasks no worker took (what a capped drain left): the latency run starts on an empty queue."""
    from django_tasks.base import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.filter(status=TaskResultStatus.READY).delete()[0]
