"""`manage.py prune_jobs [--dry-run]`: delete finished jobs past their retention age, with their timelines."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand, CommandError

from jobs import services


class Stop(Exception):
    """SIGTERM: stop between batches (each batch is its own transaction, so nothing is half done)."""


class Command(BaseCommand):
    help = (
        "Delete finished jobs older than their retention (RETENTION_SUCCEEDED_DAYS, RETENTION_FAILED_DAYS, "
        "RETENTION_CANCELLED_DAYS, RETENTION_BY_TYPE) with their timeline rows, in batches. "
        "--dry-run only counts them, per status."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--limit", type=int, default=None, help="Delete at most this many jobs.")
        parser.add_argument(
            "--batch-size", type=int, default=None, help="Jobs per transaction (default: RETENTION_BATCH_SIZE)."
        )

    def handle(self, *args, dry_run: bool, limit: int | None, batch_size: int | None, **options):
        if (limit is not None and limit < 1) or (batch_size is not None and batch_size < 1):
            raise CommandError("--limit and --batch-size must be at least 1")
        if dry_run:
            report = services.jobs_prune_count()
            for status, count in sorted(report.jobs.items()):
                self.stdout.write(f"{status}: {count}")
            self.stdout.write(f"prune_jobs: {report.summary()} (dry run)")
            return

        def stop(*_):
            raise Stop()

        signal.signal(signal.SIGTERM, stop)
        report = services.PruneReport()
        try:
            report = services.jobs_prune(limit=limit, batch_size=batch_size)
        except Stop:
            self.stderr.write("prune_jobs: stopped by SIGTERM; the batches done so far are committed")
        self.stdout.write(f"prune_jobs: {report.summary()}")
