"""The one seam to the database for the writes that carry a timeline row: moves and new jobs.

Only the store writes JobEvent rows. Two backends keep one contract (jobs.store.orm.OrmStore):

- orm: the Django ORM, on every database;
- postgres: one statement per write on PostgreSQL (jobs.store.postgres), the hot paths' round trips.

The backend is chosen once, from the connection's vendor, on first use: `store.backend().move(...)`.
Services decide what may move where; the store only applies it.
"""

from __future__ import annotations

from django.db import connection

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
