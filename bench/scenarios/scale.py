"""Scenario 6 of bench/run.py, scale: what it measures is in the docstring below and bench/README.md."""

from __future__ import annotations

import json
import re
import statistics
import time
from datetime import timedelta

from bench.common import SF_QUEUES, log, percentile, summary
from bench.report import Row, verdict
from bench.stack import Stack


def populate(stack: Stack, rows: int, queued: int) -> dict:
    """Put `rows` jobs in the table, a mix of statuses, types and queues, the newest `queued` of them queued.

    5,000 template rows go in through the ORM (bulk_create), then SQL copies of them (INSERT ... SELECT,
    new job ids) double the table up to rows - queued, then the queued rows go in through the ORM. Copying
    the model's own columns keeps this right when the app adds fields; it takes seconds, not a minute.
    """
    from django.db import connection
    from django.utils import timezone

    from jobs.models import Job

    types = ["echo", "echo", "echo", "sleep", "email", "webhook", "fail"]
    settled = ["succeeded"] * 14 + ["failed"] * 3 + ["cancelled"]
    began = time.perf_counter()
    now = timezone.now()

    def make(i: int) -> Job:
        created = now - timedelta(seconds=(rows - i) * 5)
        if i >= rows - queued:
            status, started, finished = "queued", None, None
        else:
            status = settled[i % len(settled)] if i % 97 else "started"
            started = created + timedelta(milliseconds=20)
            finished = None if status == "started" else started + timedelta(milliseconds=50)
        return Job(
            type=types[i % len(types)],
            payload={"n": i, "note": "bench row"},
            status=status,
            queue=SF_QUEUES[i % 3],
            attempts=0 if status == "queued" else 1,
            timeout=300,
            result={"n": i} if status == "succeeded" else None,
            error="Traceback (most recent call last):\nRuntimeError: bench failure" if status == "failed" else "",
            created_at=created,
            enqueued_at=created,
            started_at=started,
            finished_at=finished,
            submitted_by="api-key:bench",
        )

    settled_rows = rows - queued
    template = min(5000, settled_rows)
    Job.objects.bulk_create([make(i) for i in range(template)], batch_size=1000)
    table = Job._meta.db_table
    columns = [f.column for f in Job._meta.concrete_fields if f.column not in ("id", "job_id")]
    new_id = "gen_random_uuid()" if connection.vendor == "postgresql" else "lower(hex(randomblob(16)))"
    have = template
    with connection.cursor() as cursor:
        while have < settled_rows:
            take = min(have, settled_rows - have)
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}, job_id) "
                f"SELECT {', '.join(columns)}, {new_id} FROM {table} ORDER BY id LIMIT {take}"
            )
            have += take
    for start in range(settled_rows, rows, 5000):
        Job.objects.bulk_create([make(i) for i in range(start, min(rows, start + 5000))], batch_size=1000)
    return {"rows": Job.objects.count(), "queued": queued, "seconds": time.perf_counter() - began}


def scenario_6_scale(stack: Stack, data: dict) -> list[Row]:
    """200,000 rows: GET /jobs first page and a filtered page p99; /metrics with 10,000 queued p99."""
    from django.db import connection
    from rq import Queue, Worker
    from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

    from jobs import redis_store
    from jobs.models import Job
    from jobs.tasks import run_job

    rows, queued, reqs = stack.sizes["scale_rows"], stack.sizes["scale_queued"], stack.sizes["scale_requests"]
    stack.reset()
    fill = populate(stack, rows, queued)
    log(f"6: inserted {rows:,} rows in {fill['seconds']:.1f} s")
    table = Job._meta.db_table
    with connection.cursor() as cursor:  # what autovacuum would do soon after a bulk load
        cursor.execute(f"ANALYZE {table}")
    for name in SF_QUEUES:
        ids = [str(u) for u in Job.objects.filter(status="queued", queue=name).values_list("job_id", flat=True)]
        q = redis_store.queue(name)
        for start in range(0, len(ids), 1000):
            q.enqueue_many(
                [Queue.prepare_data(run_job, args=(i,), job_id=i, timeout=300) for i in ids[start : start + 1000]]
            )
    depth = sum(redis_store.queue(name).count for name in SF_QUEUES)

    def timed_get(path: str) -> list[float]:
        for _ in range(10):
            status, body = stack.sf_http.request("GET", path)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}: {body[:200]!r}")
        samples = []
        for _ in range(reqs):
            t = time.perf_counter()
            status, body = stack.sf_http.request("GET", path)
            samples.append((time.perf_counter() - t) * 1000)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}")
        return samples

    first_body = json.loads(stack.sf_http.request("GET", "/jobs")[1])
    filtered_body = json.loads(stack.sf_http.request("GET", "/jobs?status=failed&type=echo")[1])
    first = timed_get("/jobs")
    filtered = timed_get("/jobs?status=failed&type=echo")
    scrape_body = stack.sf_http.request("GET", "/metrics")[1].decode()
    depth_seen = sum(
        float(m.group(1)) for m in re.finditer(r'^jobs_queue_depth\{queue="[^"]+"\} (\S+)$', scrape_body, re.M)
    )
    scrape = timed_get("/metrics")

    columns = ", ".join(
        f.column for f in Job._meta.concrete_fields if f.column not in ("request_fingerprint", "budget_start")
    )

    def sql(where: str) -> list[float]:
        samples = []
        for _ in range(reqs + 10):
            t = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {columns} FROM {table} {where} ORDER BY id DESC LIMIT 50")
                cursor.fetchall()
            samples.append((time.perf_counter() - t) * 1000)
        return samples[10:]

    sql_first = sql("")
    sql_filtered = sql("WHERE status = 'failed' AND type = 'echo'")

    queues = redis_store.queues()

    def raw_stats() -> float:
        t = time.perf_counter()
        for q in queues:
            q.count  # noqa: B018 - each is a Redis call, as RQ dashboards make them
            StartedJobRegistry(queue=q).count  # noqa: B018
            FinishedJobRegistry(queue=q).count  # noqa: B018
            FailedJobRegistry(queue=q).count  # noqa: B018
        Worker.count(connection=stack.redis)
        return (time.perf_counter() - t) * 1000

    raw_scrape = [raw_stats() for _ in range(reqs)]
    stack.reset()
    data["6"] = {
        "populate": fill,
        "rq_queued": depth,
        "metrics_depth_seen": depth_seen,
        "first_page_results": len(first_body.get("results", [])),
        "filtered_page_results": len(filtered_body.get("results", [])),
        "list_first_ms": summary(first),
        "list_filtered_ms": summary(filtered),
        "metrics_ms": summary(scrape),
        "sql_first_ms": summary(sql_first),
        "sql_filtered_ms": summary(sql_filtered),
        "raw_rq_stats_ms": summary(raw_scrape),
    }
    log(
        f"6: list p99 {percentile(first, 0.99):.1f} ms, filtered {percentile(filtered, 0.99):.1f} ms, "
        f"metrics {percentile(scrape, 0.99):.1f} ms"
    )
    label = f"{rows // 1000}k rows"
    return [
        Row(
            "6 scale",
            f"GET /jobs p99, {label}",
            percentile(first, 0.99),
            percentile(sql_first, 0.99),
            "ms",
            None,
            "<= 50 ms",
            verdict(percentile(first, 0.99) <= 50),
            f"ref: raw SQL LIMIT 50 in-process; p50 {statistics.median(first):.1f} ms",
        ),
        Row(
            "6 scale",
            "GET /jobs?status=failed&type=echo p99",
            percentile(filtered, 0.99),
            percentile(sql_filtered, 0.99),
            "ms",
            None,
            "<= 50 ms",
            verdict(percentile(filtered, 0.99) <= 50),
            f"{len(filtered_body.get('results', []))} results; p50 {statistics.median(filtered):.1f} ms",
        ),
        Row(
            "6 scale",
            f"GET /metrics p99, {depth:,} queued",
            percentile(scrape, 0.99),
            percentile(raw_scrape, 0.99),
            "ms",
            None,
            "<= 100 ms",
            verdict(percentile(scrape, 0.99) <= 100),
            f"ref: RQ stats calls in-process; depth in scrape {depth_seen:,.0f}",
        ),
    ]
