"""django-q2, ORM broker: `qcluster` with 2 workers (its defaults otherwise: polls every 0.2 s, one task per fetch)."""

from __future__ import annotations

import sys

NAME = "django-q2"
COMMANDS = 1  # one command, 2 worker processes (it forks them)
WORKER = "qcluster, workers 2, ORM broker"
BULK = None  # django-q2 has no bulk enqueue (async_iter runs one task over many arguments)


def worker_argv(*, drain: bool) -> list[str]:
    return [sys.executable, "-m", "django", "qcluster"]


def enqueue_noop() -> None:
    from django_q.tasks import async_task

    async_task("bench.peers.tasks_common.noop")


def enqueue_stamp(sent: float) -> None:
    from django_q.tasks import async_task

    async_task("bench.peers.tasks_common.stamp", sent)


def done() -> int:
    from django_q.models import Success

    return Success.objects.count()


def discard_waiting() -> int:
    """Delete the tasks no worker took (what a capped drain left): the latency run starts on an empty queue."""
    from django_q.models import OrmQ

    return OrmQ.objects.all().delete()[0]
