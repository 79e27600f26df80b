"""The PostgreSQL backend of the store: each write, with its timeline row, in one statement.

With the ORM, a transition is a compare-and-set UPDATE plus its timeline row in a
transaction, and a submit is the job plus its first event: four round trips each (the
statements, BEGIN and COMMIT are sent apart) plus the Python to build each query. On
PostgreSQL one statement with data-modifying CTEs does the same atomically. The rules
(which moves are allowed, what changes, what a new job holds) stay in jobs.services; this
module only runs them, as jobs.store.orm does on other databases.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from datetime import datetime
from functools import cache
from typing import Any

import psycopg
from django.db import connection, transaction
from django.db.models import Field
from django.utils import timezone

from ..models import Job, JobDependency, JobEvent, JobStatus
from .orm import OrmStore
from .records import RunOutcome

JOB = Job._meta.db_table
EVENT = JobEvent._meta.db_table
DEPENDENCY = JobDependency._meta.db_table
FIELDS = Job._meta.concrete_fields
FIELDS_BY_NAME = {field.name: field for field in FIELDS}
ATTNAMES = [field.attname for field in FIELDS]


class PostgresStore:
    """jobs.store's operations on PostgreSQL; see jobs.store.orm.OrmStore for what each one does."""

    name = "postgres"

    def move(
        self,
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
        pins = {"attempts": expect_attempts, "updated_at": expect_updated_at}
        pins = {name: value for name, value in pins.items() if value is not None}
        return _execute("id", job.pk, allowed, target, stamp, actor, changes, pins) is not None

    def start(
        self, *, job_id: str, allowed: list[str], stamp: datetime, actor: str, changes: dict[str, Any]
    ) -> Job | None:
        row = _execute(
            "job_id", job_id, allowed, JobStatus.STARTED, stamp, actor, changes, {}, count_attempt=True, whole_row=True
        )
        if row is None:
            return None
        values = list(row)
        for index, column, converters in _converters():
            for convert in converters:
                values[index] = convert(values[index], column, connection)
        return Job.from_db(connection.alias, ATTNAMES, values)

    def insert(self, jobs: list[Job], *, at: datetime, actor: str) -> None:
        if any(job.workflow_id or job.node or job.allow_failure or job.error for job in jobs):
            # Jobs of a graph (rare, and in the caller's transaction with their edges): the columns that
            # insert_jobs gives one value for all the jobs differ here.
            OrmStore().insert(jobs, at=at, actor=actor)
            return
        insert_jobs(jobs, at=at, actor=actor)

    def finish_runs(self, outcomes: list[RunOutcome], *, stamp: datetime) -> set[int]:
        return finish_runs(outcomes, stamp=stamp)


def _execute(
    lookup: str,
    value: Any,
    allowed: list[str],
    target: str,
    stamp: datetime,
    actor: str,
    changes: dict[str, Any],
    pins: dict[str, Any],
    *,
    count_attempt: bool = False,
    whole_row: bool = False,
) -> tuple[Any, ...] | None:
    """Move the job whose `lookup` column is `value` to `target` if its status is in `allowed` and its
    `pins` columns hold their values; sets `changes` (and attempts + 1 with `count_attempt`).

    Returns the row as stored (all of Job's columns with `whole_row`, else its id); None when none matched.
    """
    sql = _statement(lookup, tuple(changes), tuple(pins), count_attempt, whole_row)
    params = [value, list(allowed), *(_prep_save(name, v) for name, v in pins.items())]
    params += [target, stamp, *(_prep_save(name, v) for name, v in changes.items())]
    params += [stamp, target, actor]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row: tuple[Any, ...] | None = cursor.fetchone()
        return row


def _prep_save(name: str, value: Any) -> Any:
    return FIELDS_BY_NAME[name].get_db_prep_save(value, connection)


@cache
def _statement(lookup: str, changed: tuple[str, ...], pinned: tuple[str, ...], count_attempt: bool, row: bool) -> str:
    column = FIELDS_BY_NAME[lookup].column
    pin = "".join(f" AND {FIELDS_BY_NAME[name].column} = %s" for name in pinned)
    sets = ["status = %s", "updated_at = %s", *(f"{FIELDS_BY_NAME[name].column} = %s" for name in changed)]
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
def _converters() -> list[tuple[int, Any, list[Any]]]:
    """What the ORM applies to each column it reads (JSON decoding, for one), per field of Job."""
    found = []
    for index, field in enumerate(FIELDS):
        column = field.get_col(JOB)
        converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if converters:
            found.append((index, column, converters))
    return found


# --------------------------------------------------------------------------- new jobs

# The Job columns that differ between the jobs of one submission; _new_job gives every other column
# (created_at, submitted_by, request_fingerprint, the zeros and blanks) one value for all of them.
PER_JOB_COLUMNS = (
    "job_id",
    "type",
    "payload",
    "status",
    "queue",
    "max_retries",
    "timeout",
    "run_at",
    "idempotency_key",
    "enqueued_at",
    "callback_url",
    "callback_status",
    "unique_key",
    "unique_claim",
    "unique_until",
    "tags",
    "metadata",
)

JSON_COLUMNS = ("payload", "tags", "metadata")


def insert_jobs(jobs: list[Job], *, at: datetime, actor: str) -> None:
    """Insert new jobs and their first timeline events in one statement; sets their pk.

    Outside a transaction the statement commits by itself, so a submit costs one round trip
    instead of four (BEGIN, two INSERTs, COMMIT).
    """
    db = transaction.get_connection()  # the connection itself, not the thread-local proxy: read often below
    updated_at = timezone.now()  # as auto_now would set it
    _per_job, shared = _job_insert_fields()
    first = jobs[0]
    shared_values = [
        field.get_db_prep_save(updated_at if field.name == "updated_at" else getattr(first, field.attname), db)
        for field in shared
    ]
    encoder = Job._meta.get_field("payload").encoder
    if len(jobs) == 1:
        values = [getattr(first, name) for name in PER_JOB_COLUMNS]
        for name in JSON_COLUMNS:
            values[PER_JOB_COLUMNS.index(name)] = db.ops.adapt_json_value(getattr(first, name), encoder)
    else:
        # Many rows go in as one JSON array that PostgreSQL unpacks (json_to_recordset): one C-speed
        # json.dumps here instead of quoting every value of every row into SQL.
        values = [json.dumps([_insert_row(job) for job in jobs], cls=encoder)]
    # Inside a transaction (a test, or a caller's atomic block) a savepoint lets the IntegrityError
    # of a repeated Idempotency-Key leave that transaction usable, as the ORM path does.
    with transaction.atomic() if db.in_atomic_block else nullcontext():
        ids = dict(_prepared(db, _job_insert_statement(many=len(jobs) > 1), [*values, *shared_values, at, actor]))
    alias = db.alias
    for job in jobs:
        job.pk = ids[job.job_id]
        job.updated_at = updated_at
        job._state.adding = False
        job._state.db = alias


def _prepared(db: Any, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """Run a statement as a prepared statement with its parameters bound by the server; its rows.

    Django's cursors bind on the client: every call quotes each value into the SQL text, and the server
    parses and plans that text anew. Prepared once per connection, a submit's statement skips both
    (a third of the insert's client CPU). Tests and debugging hook Django's cursor (execute_wrapper,
    the query log): while they do, the statement goes through it.
    """
    if db.execute_wrappers or db.queries_logged:
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    db.validate_no_broken_transaction()
    with db.wrap_database_errors:
        db.ensure_connection()
        with psycopg.Cursor(db.connection) as cursor:
            cursor.execute(sql, params, prepare=True)
            return cursor.fetchall()


def _insert_row(job: Job) -> dict[str, Any]:
    """The PER_JOB_COLUMNS values of one job as JSON values (times with their microseconds)."""
    return {
        "job_id": str(job.job_id),
        "type": job.type,
        "payload": job.payload,
        "status": job.status,
        "queue": job.queue,
        "max_retries": job.max_retries,
        "timeout": job.timeout,
        "run_at": job.run_at and job.run_at.isoformat(),
        "idempotency_key": job.idempotency_key,
        "enqueued_at": job.enqueued_at and job.enqueued_at.isoformat(),
        "callback_url": job.callback_url,
        "callback_status": job.callback_status,
        "unique_key": job.unique_key,
        "unique_claim": job.unique_claim,
        "unique_until": job.unique_until and job.unique_until.isoformat(),
        "tags": job.tags,
        "metadata": job.metadata,
    }


@cache
def _job_insert_fields() -> tuple[list[Field[Any, Any]], list[Field[Any, Any]]]:
    """Job's columns but the primary key: those of PER_JOB_COLUMNS, then the others."""
    per_job = [FIELDS_BY_NAME[name] for name in PER_JOB_COLUMNS]
    return per_job, [field for field in FIELDS if not field.primary_key and field.name not in PER_JOB_COLUMNS]


@cache
def _job_insert_statement(*, many: bool) -> str:
    """The statement of insert_jobs; its parameters: the PER_JOB_COLUMNS values (all jobs' in one JSON
    array when `many`), the other columns' values, then the event's time and actor."""
    per_job, shared = _job_insert_fields()
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in [*per_job, *shared])
    placeholders = ", ".join(["%s"] * len(shared))
    if many:
        # The keys of _insert_row, typed without a length (varchar, not varchar(64)): too long a value
        # then fails the INSERT, as with the ORM, instead of being cut short.
        types = ", ".join(f"{quote(field.name)} {(field.db_type(connection) or '').split('(')[0]}" for field in per_job)
        names = ", ".join(quote(field.name) for field in per_job)
        rows = f"""rows AS (
            SELECT * FROM ROWS FROM (json_to_recordset(%s::json) AS ({types})) WITH ORDINALITY AS j({names}, n)
        ),
        new_jobs AS (
            INSERT INTO {quote(Job._meta.db_table)} ({columns})
            SELECT {names}, {placeholders} FROM rows ORDER BY n
            RETURNING id, job_id, status
        )"""
    else:
        rows = f"""new_jobs AS (
            INSERT INTO {quote(Job._meta.db_table)} ({columns})
            VALUES ({", ".join(["%s"] * len(per_job))}, {placeholders})
            RETURNING id, job_id, status
        )"""
    return f"""
        WITH {rows}, events AS (
            INSERT INTO {quote(JobEvent._meta.db_table)} (job_id, at, from_status, to_status, actor)
            SELECT id, %s, '', status, %s FROM new_jobs ORDER BY id
        )
        SELECT job_id, id FROM new_jobs
    """


# --------------------------------------------------------------------------- outcomes of runs

# The columns an outcome may change besides the ones every outcome sets: a success sets the result,
# a failed attempt the error and its fingerprint (and run_at when it is retried).
OUTCOME_CHANGES = ("result", "error", "error_fingerprint", "run_at")


def finish_runs(outcomes: list[RunOutcome], *, stamp: datetime) -> set[int]:
    """Record many outcomes in one statement (a group commit): each row moves, with its timeline rows,
    only if its compare-and-set holds (see RunOutcome). Returns the pks of the rows that moved.

    The outcomes go in as one JSON array that PostgreSQL unpacks, as a batch submit does.
    """
    db = transaction.get_connection()
    encoder = Job._meta.get_field("result").encoder
    rows = []
    for outcome in outcomes:
        row: dict[str, Any] = {
            "id": outcome.job.pk,
            "recorded": outcome.start_recorded,
            "attempt": outcome.attempt,
            "started_at": outcome.started_at.isoformat(),
            "finished_at": outcome.finished_at.isoformat(),
            "target": outcome.target,
            "actor": outcome.actor,
        }
        for name in OUTCOME_CHANGES:
            value = outcome.changes.get(name)
            row[f"set_{name}"] = name in outcome.changes
            row[name] = value.isoformat() if isinstance(value, datetime) else value
        rows.append(row)
    runnable = list(outcomes[0].runnable) if outcomes else []
    with transaction.atomic() if db.in_atomic_block else nullcontext():
        with db.cursor() as cursor:
            cursor.execute(_finish_statement(), [json.dumps(rows, cls=encoder), runnable, stamp])
            found = dict(cursor.fetchall())
    for outcome in outcomes:
        outcome.has_dependents = bool(found.get(outcome.job.pk))
    return set(found)


@cache
def _finish_statement() -> str:
    """The statement of finish_runs; its parameters: the outcomes as JSON, the runnable statuses, updated_at."""
    started = JobStatus.STARTED
    return f"""
        WITH input AS (
            SELECT * FROM json_to_recordset(%s::json) AS i(
                id bigint, recorded boolean, attempt integer, started_at timestamptz, finished_at timestamptz,
                target text, actor text, set_result boolean, result jsonb, set_error boolean, error text,
                set_error_fingerprint boolean, error_fingerprint text, set_run_at boolean, run_at timestamptz
            )
        ), previous AS (
            SELECT job.id, job.status FROM {JOB} AS job JOIN input AS i ON job.id = i.id
            WHERE (i.recorded AND job.status = '{started}' AND job.attempts = i.attempt)
               OR (NOT i.recorded AND job.status = ANY(%s) AND job.attempts = i.attempt - 1)
            ORDER BY job.id
            FOR UPDATE OF job
        ), moved AS (
            UPDATE {JOB} AS job SET
                status = i.target, updated_at = %s, attempts = i.attempt,
                started_at = i.started_at, finished_at = i.finished_at,
                result = CASE WHEN i.set_result THEN i.result ELSE job.result END,
                error = CASE WHEN i.set_error THEN i.error ELSE job.error END,
                error_fingerprint = CASE WHEN i.set_error_fingerprint THEN i.error_fingerprint
                    ELSE job.error_fingerprint END,
                run_at = CASE WHEN i.set_run_at THEN i.run_at ELSE job.run_at END
            FROM previous JOIN input AS i ON i.id = previous.id
            WHERE job.id = previous.id
            RETURNING job.id, previous.status AS previous_status,
                i.recorded, i.started_at, i.finished_at, i.target, i.actor
        ), logged AS (
            INSERT INTO {EVENT} (job_id, at, from_status, to_status, actor)
            SELECT id, at, from_status, to_status, actor FROM (
                SELECT id, started_at AS at, previous_status AS from_status, '{started}' AS to_status, actor, 0 AS step
                FROM moved WHERE NOT recorded
                UNION ALL
                SELECT id, finished_at, '{started}', target, actor, 1 FROM moved
            ) AS steps ORDER BY id, step
        )
        SELECT id, EXISTS (SELECT 1 FROM {DEPENDENCY} AS d WHERE d.parent_id = moved.id) FROM moved
    """
