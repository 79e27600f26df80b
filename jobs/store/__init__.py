"""The one seam to the database for the writes that carry a timeline row: moves and new jobs.

Only the store writes JobEvent rows. Two backends keep one contract (jobs.store.orm.OrmStore):

- orm: the Django ORM, on every database;
- postgres: one statement per write on PostgreSQL (jobs.store.postgres), the hot paths' round trips.

The backend is chosen once, from the connection's vendor, on first use. Services decide what may
move where; the store only applies it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection

from ..models import Job
from .orm import OrmStore
from .postgres import PostgresStore

JobStore = OrmStore | PostgresStore
BACKENDS: dict[str, type[JobStore]] = {"orm": OrmStore, "postgres": PostgresStore}

_backend: JobStore | None = None


def backend() -> JobStore:
    """The backend for this process's database: PostgresStore on PostgreSQL, else OrmStore."""
    global _backend
    if _backend is None:
        _backend = PostgresStore() if connection.vendor == "postgresql" else OrmStore()
    return _backend


def available_backends() -> list[str]:
    """The names of the backends that can run on the configured database (orm always)."""
    return ["orm", "postgres"] if connection.vendor == "postgresql" else ["orm"]


def move(
    *,
    job: Job,
    target: str,
    allowed: list[str],
    stamp: datetime,
    actor: str,
    changes: dict[str, Any],
    expect_attempts: int | None = None,
    expect_updated_at: datetime | None = None,
) -> bool:
    """Compare-and-set `job` to `target` and write its timeline row; False when the row did not match."""
    return backend().move(
        job=job,
        target=target,
        allowed=allowed,
        stamp=stamp,
        actor=actor,
        changes=changes,
        expect_attempts=expect_attempts,
        expect_updated_at=expect_updated_at,
    )


def start(*, job_id: str, allowed: list[str], stamp: datetime, actor: str, changes: dict[str, Any]) -> Job | None:
    """Move job `job_id` to `started`, counting an attempt; the stored row, or None when it did not match."""
    return backend().start(job_id=job_id, allowed=allowed, stamp=stamp, actor=actor, changes=changes)


def insert(jobs: list[Job], *, at: datetime, actor: str) -> None:
    """Store new jobs and their first timeline rows, all or nothing; sets their pk."""
    backend().insert(jobs, at=at, actor=actor)
