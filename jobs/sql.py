"""A job transition in one SQL statement, for the worker's hot path on PostgreSQL.

services._transition does a compare-and-set UPDATE and inserts the timeline row in a
transaction: with the ORM that is four round trips (the UPDATE, the INSERT, BEGIN and
COMMIT are sent apart) plus the Python to build each query. On PostgreSQL one statement
with data-modifying CTEs does the same atomically: it locks the row if its status (and
attempt count) still allow the move, updates it, logs the event with the status it came
from, and returns the row. The rules (which moves are allowed, what changes) stay in
services; this module only runs them. Other databases use the ORM path.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection

from .models import Job, JobEvent

JOB = Job._meta.db_table
EVENT = JobEvent._meta.db_table
FIELDS = Job._meta.concrete_fields
FIELDS_BY_NAME = {field.name: field for field in FIELDS}


def supported() -> bool:
    return connection.vendor == "postgresql"


def move(
    *,
    lookup: str,
    value: Any,
    allowed: list[str],
    target: str,
    stamp: datetime,
    actor: str,
    changes: dict[str, Any],
    expect_attempts: int | None = None,
    count_attempt: bool = False,
    returning_row: bool = False,
) -> Job | bool | None:
    """Move the job whose `lookup` column is `value` to `target` if its status is in `allowed`.

    Sets `changes` (and attempts + 1 with `count_attempt`). Returns the updated Job when
    `returning_row`, else True; None or False when the job was not in an allowed state.
    """
    sql = _statement(lookup, tuple(changes), expect_attempts is not None, count_attempt, returning_row)
    params = [value, list(allowed)]
    if expect_attempts is not None:
        params.append(expect_attempts)
    params += [target, stamp, *(FIELDS_BY_NAME[name].get_db_prep_save(v, connection) for name, v in changes.items())]
    params += [stamp, target, actor]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if not returning_row:
        return row is not None
    if row is None:
        return None
    values = list(row)
    for index, column, converters in _converters():
        for convert in converters:
            values[index] = convert(values[index], column, connection)
    return Job.from_db(connection.alias, [field.attname for field in FIELDS], values)


@cache
def _statement(lookup: str, changed: tuple[str, ...], pin_attempts: bool, count_attempt: bool, row: bool) -> str:
    column = Job._meta.get_field(lookup).column
    pin = " AND attempts = %s" if pin_attempts else ""
    sets = ["status = %s", "updated_at = %s", *(f"{Job._meta.get_field(name).column} = %s" for name in changed)]
    if count_attempt:
        sets.append("attempts = job.attempts + 1")
    returned = ", ".join(f"job.{field.column}" for field in FIELDS) if row else "job.id"
    selected = ", ".join(field.column for field in FIELDS) if row else "id"
    return f"""
        WITH previous AS (
            SELECT id, status FROM {JOB} WHERE {column} = %s AND status = ANY(%s){pin} FOR UPDATE
        ), moved AS (
            UPDATE {JOB} AS job SET {", ".join(sets)} FROM previous WHERE job.id = previous.id
            RETURNING {returned}, previous.status AS previous_status
        ), logged AS (
            INSERT INTO {EVENT} (job_id, at, from_status, to_status, actor)
            SELECT id, %s, previous_status, %s, %s FROM moved
        )
        SELECT {selected} FROM moved
    """


@cache
def _converters() -> list[tuple[int, Any, list]]:
    """What the ORM applies to each column it reads (JSON decoding, for one), per field of Job."""
    found = []
    for index, field in enumerate(FIELDS):
        column = field.get_col(JOB)
        converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if converters:
            found.append((index, column, converters))
    return found
