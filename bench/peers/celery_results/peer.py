"""Celery + django-celery-results: prefork worker with 2 child processes, each result a row in PostgreSQL."""

from __future__ import annotations

import sys

NAME = "Celery"
COMMANDS = 1  # one command, 2 worker processes (it forks them)
WORKER = "celery worker -P prefork -c 2, django-db results"
BULK = "group().apply_async"


def worker_argv(*, drain: bool) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", "bench.peers.celery_results.app", "worker", "-P", "prefork"]
    return argv + ["-c", "2", "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]


def enqueue_noop() -> None:
    from bench.peers.celery_results.tasks import noop

    noop.delay()


def enqueue_many(n: int) -> None:
    from celery import group

    from bench.peers.celery_results.tasks import noop

    group(noop.s() for _ in range(n)).apply_async()


def enqueue_stamp(sent: float) -> None:
    from bench.peers.celery_results.tasks import stamp

    stamp.delay(sent)


def done() -> int:
    from django_celery_results.models import TaskResult

    return TaskResult.objects.filter(status="SUCCESS").count()


def discard_waiting() -> int:
    """Purge the broker's queue (what a capped drain left; a stopped worker gives back its prefetched
    messages first): the latency run starts on an empty queue."""
    from bench.peers.celery_results.app import app

    return app.control.purge()
