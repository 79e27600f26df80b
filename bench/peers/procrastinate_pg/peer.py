"""Procrastinate: its own worker (`procrastinate worker`, one job at a time per process), jobs kept in its table."""

from __future__ import annotations

import sys

NAME = "Procrastinate"
COMMANDS = 2  # worker_argv started twice: 2 worker processes
WORKER = "procrastinate worker --concurrency 1"
BULK = "batch_defer"


def worker_argv(*, drain: bool) -> list[str]:
    return [sys.executable, "-m", "django", "procrastinate", "worker", "--concurrency", "1"]


def enqueue_noop() -> None:
    from bench.peers.procrastinate_pg.tasks import noop

    noop.defer()


def enqueue_many(n: int) -> None:
    from bench.peers.procrastinate_pg.tasks import noop

    noop.batch_defer(*({} for _ in range(n)))


def enqueue_stamp(sent: float) -> None:
    from bench.peers.procrastinate_pg.tasks import stamp

    stamp.defer(sent=sent)


def done() -> int:
    from procrastinate.contrib.django.models import ProcrastinateJob

    return ProcrastinateJob.objects.filter(status="succeeded").count()


def discard_waiting() -> int:
    """Delete the jobs no worker took (what a capped drain left): the latency run starts on an empty queue.
    (Procrastinate's Django models are read-only: plain SQL; its events go with their job.)"""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs WHERE status = 'todo'")
        return cursor.rowcount
