"""`manage.py sentinel`: the loop that keeps the database and Redis in agreement (see jobs/sentinel.py)."""

from __future__ import annotations

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections
from redis.exceptions import RedisError

from jobs.sentinel import PassReport, Sentinel

logger = logging.getLogger("jobs.sentinel")


class Command(BaseCommand):
    help = (
        "Keep the database and Redis in agreement, so that no job is lost: enqueue pending jobs, run again "
        "jobs whose worker died, restore queued and scheduled jobs that Redis lost, prune finished jobs past "
        "their retention. Runs a pass every "
        "SENTINEL_INTERVAL seconds until SIGTERM or Ctrl-C; several may run at once (a Redis lock)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Run one pass and exit (status 1 if it failed).")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Seconds between passes (default: the SENTINEL_INTERVAL setting, 5 unless set).",
        )

    def handle(self, *args, once: bool, interval: float | None, **options):
        interval = settings.SENTINEL_INTERVAL if interval is None else interval
        if interval <= 0:
            raise CommandError("--interval must be positive")
        stopping = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
        sentinel = Sentinel(sleep=stopping.wait)
        totals = PassReport()
        passes = 0
        failing = False
        if not once:
            self.stdout.write(f"sentinel: a pass every {interval:g} s")
        while not stopping.is_set():
            # A database restart leaves a dead connection behind; this drops it so the next query reconnects.
            close_old_connections()
            passes += 1
            try:
                report = sentinel.run_pass()
            except (RedisError, DatabaseError) as error:
                if once:
                    raise CommandError(f"the pass failed: {type(error).__name__}: {error}") from None
                # One warning when passes start failing (Redis or the database is down), not one a pass.
                logger.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "sentinel: pass %s failed, retrying every %g s: %s: %s",
                    passes,
                    interval,
                    type(error).__name__,
                    error,
                )
                failing = True
                report = None
            else:
                if failing:
                    logger.warning("sentinel: passes succeed again (pass %s)", passes)
                failing = False
            if report is not None and report.acted:
                self.stdout.write(f"sentinel: pass {passes}: {report.summary()}")
                for name in ("enqueued", "recovered", "failed", "restored", "scheduled", "pruned"):
                    setattr(totals, name, getattr(totals, name) + getattr(report, name))
            elif once and report is None:
                self.stdout.write("sentinel: another sentinel holds the lock; nothing done")
            self.stdout.flush()
            if once or stopping.wait(interval):
                break
        self.stdout.write(
            f"sentinel: stopped after {passes} pass(es): enqueued {totals.enqueued}, recovered {totals.recovered}, "
            f"failed {totals.failed}, restored {totals.restored}, submitted {totals.scheduled} for schedules, "
            f"pruned {totals.pruned}"
        )
