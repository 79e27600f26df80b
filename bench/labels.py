"""Benchmark: the list's tag, metadata and payload filters over N jobs on PostgreSQL (issue 18).

Fills a fresh PostgreSQL database with N jobs (default 1,000,000) whose labels are spread as in a busy
installation: ~50 tags ("nightly" on 30% of the rows, "billing" 10%, "export" 5%, one of 37 "team-<k>"
each, ten "rare-<k>" at 0.1% each, "legacy" on the oldest 10% only), metadata `{"region": one of 5,
"customer": one of 10,000}` and a payload carrying the same `customer_id`; statuses 90% succeeded,
5% failed, 3% queued, 2% cancelled.
Runs `EXPLAIN (ANALYZE, BUFFERS)` of the SQL each filter produces (the list's first page: the
selector's query, ordered by -id, limit + 1 rows, as the cursor pagination asks), then starts a private
redis-server and gunicorn and times each filter's first page from reader threads. Prints a table
(rows matching, the SQL's execution time, p50/p99/max of the request per filter, the indexes the plan
reads), saves JSON (with the plans) under bench/results/, stops
everything it started by pid and drops the database.

    python bench/labels.py [--rows 1000000] [--requests 300] [--readers 2] [--database NAME]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, as the other benchmarks). The issue's target:
p99 <= 50 ms for a tag or metadata filter over 1,000,000 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

# Run as `python bench/labels.py`: the repository root goes on sys.path, so that `bench`, `jobs` and
# `sentinelflow_site` import as packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from bench.common import API_KEY, PG_BASE, RESULTS, ROOT, log, percentile  # noqa: E402
from sentinelflow_site.processes import (  # noqa: E402
    child_environment,
    free_port,
    redis_server_command,
    start_process,
    stop_process,
)

TARGET_P99_MS = 50.0
PAGE = 50  # the list's default page size, asked for explicitly
# (name, query string): the first page of each, newest first.
FILTERS = [
    ("tag, common (30%)", "tag=nightly"),
    ("tag, rare (0.1%)", "tag=rare-3"),
    ("two tags (3%)", "tag=nightly&tag=billing"),
    ("metadata.region (20%)", "metadata.region=eu"),
    ("metadata.customer (0.01%)", "metadata.customer=c-4242"),
    ("payload.customer_id (0.01%)", "payload.customer_id=4242"),
    # Common once, absent lately: its rows are the oldest tenth, which a newest-first scan reaches last.
    ("tag, old rows only (10%)", "tag=legacy"),
    ("status + tag (0.5%)", "status=failed&tag=billing"),
    ("status + rare tag (0.005%)", "status=failed&tag=rare-3"),
]
REGIONS = ["eu", "us", "ap", "sa", "af"]
CUSTOMERS = 10_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="Jobs to fill (default 1,000,000).")
    parser.add_argument("--requests", type=int, default=300, help="Requests per filter (default 300).")
    parser.add_argument("--readers", type=int, default=2, help="Threads reading GET /jobs (default 2).")
    parser.add_argument("--database", default="", help="Database name (default: sentinelflow_bench_labels_<hex>).")
    return parser.parse_args()


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinelflow_site.settings")
    os.environ.setdefault("SECRET_KEY", "bench-labels")
    import django

    django.setup()


def fill(rows: int) -> float:
    """Insert the jobs with one INSERT ... SELECT (all columns from the model, so columns added later
    with defaults fill themselves), seeded so that each run draws the same spread; returns seconds."""
    from django.db import connection

    from jobs.models import Job

    regions = "ARRAY[" + ", ".join(f"'{region}'" for region in REGIONS) + "]"
    tags = (
        "to_jsonb(array_remove(ARRAY["
        "CASE WHEN random() < 0.30 THEN 'nightly' END, "
        "CASE WHEN random() < 0.10 THEN 'billing' END, "
        "CASE WHEN random() < 0.05 THEN 'export' END, "
        "'team-' || floor(random() * 37)::int, "
        "CASE WHEN random() < 0.01 THEN 'rare-' || floor(random() * 10)::int END, "
        f"CASE WHEN n <= {rows // 10} THEN 'legacy' END"
        "], NULL))"
    )
    status = (
        "CASE WHEN r < 0.90 THEN 'succeeded' WHEN r < 0.95 THEN 'failed' "
        "WHEN r < 0.98 THEN 'queued' ELSE 'cancelled' END"
    )
    finished = "CASE WHEN r < 0.95 OR r >= 0.98 THEN now() - (n || ' seconds')::interval END"
    expressions = {
        "id": None,
        "job_id": "gen_random_uuid()",
        "type": "'echo'",
        "status": status,
        "attempts": "1",
        "timeout": "60",
        "payload": "jsonb_build_object('customer_id', c, 'n', n)",
        "tags": tags,
        "metadata": f"jsonb_build_object('region', ({regions})[1 + floor(random() * 5)::int], 'customer', 'c-' || c)",
        "submitted_by": "'api-key:bench'",
        # Newest last, as submitted: the highest id is the most recent.
        "created_at": f"now() - (({rows} - n) || ' seconds')::interval",
        "enqueued_at": f"now() - (({rows} - n) || ' seconds')::interval",
        "finished_at": finished,
        "updated_at": "now()",
    }
    columns, values, params = [], [], []
    for field in Job._meta.concrete_fields:
        if field.name in expressions:
            if expressions[field.name] is None:
                continue
            values.append(expressions[field.name])
        else:
            values.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
        columns.append(connection.ops.quote_name(field.column))
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(0.18)")
        cursor.execute(
            f"INSERT INTO {Job._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(values)} "
            f"FROM (SELECT n, random() AS r, floor(random() * {CUSTOMERS})::int AS c "
            f"FROM generate_series(1, %s) AS n) AS spread",
            [*params, rows],
        )
        cursor.execute(f"VACUUM ANALYZE {Job._meta.db_table}")
    return time.perf_counter() - began


def explain(query: str) -> tuple[str, int, str, float]:
    """EXPLAIN (ANALYZE, BUFFERS) of the list's first page for `query`: the plan, the rows matching
    (a count), the indexes the plan reads, and its execution time in ms."""
    from django.http import QueryDict

    from jobs import selectors

    params = QueryDict(query)
    queryset = selectors.job_filtered(params)
    plan = queryset.order_by("-id")[: PAGE + 1].explain(analyze=True, buffers=True)
    matching = selectors.job_filtered(params).count()
    indexes = sorted(set(re.findall(r"(?:Index|Index Only) Scan(?: Backward)? using (\w+)|on (job_\w+)", plan)))
    used = ", ".join(sorted({name for pair in indexes for name in pair if name}))
    executed = re.search(r"Execution Time: ([0-9.]+) ms", plan)
    return plan, matching, used, float(executed.group(1)) if executed else float("nan")


def time_filters(base_url: str, readers: int, count: int) -> tuple[dict[str, list[float]], int]:
    """Each filter's first page `count` times, from `readers` threads at once; latencies in ms."""
    samples: dict[str, list[float]] = {}
    errors = 0
    lock = threading.Lock()
    for _, query in FILTERS:
        path = f"/jobs?{query}&limit={PAGE}"
        left = [count]

        def read(path: str = path, query: str = query, left: list[int] = left) -> None:
            nonlocal errors
            session = requests.Session()
            session.headers["X-API-Key"] = API_KEY
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                began = time.perf_counter()
                try:
                    response = session.get(base_url + path, timeout=30)
                    ok = response.status_code == 200
                except requests.RequestException:
                    ok = False
                elapsed = (time.perf_counter() - began) * 1000
                with lock:
                    if ok:
                        samples.setdefault(query, []).append(elapsed)
                    else:
                        errors += 1

        session = requests.Session()  # a few warm-up reads: both gunicorn workers connected, pages cached
        session.headers["X-API-Key"] = API_KEY
        for _ in range(4):
            session.get(base_url + path, timeout=60)
        threads = [threading.Thread(target=read, daemon=True) for _ in range(readers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return samples, errors


def main() -> int:
    args = parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = args.database or f"sentinelflow_bench_labels_{secrets.token_hex(4)}"
    database_url = PG_BASE + name
    work = Path(tempfile.mkdtemp(prefix="sf-bench-labels-"))
    processes: list[subprocess.Popen] = []
    import psycopg

    with psycopg.connect(PG_BASE + "postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    plans: dict[str, dict[str, object]] = {}
    try:
        redis_port, web_port = free_port(), free_port()
        env = child_environment(
            DATABASE_URL=database_url,
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            API_KEY=API_KEY,
            SECRET_KEY="bench-labels",
            DEBUG="0",
            ALLOWED_HOSTS="127.0.0.1",
            THROTTLE_RATE_ANON="100000/s",
            THROTTLE_RATE_KEY="100000/s",
            LOG_LEVEL="WARNING",
        )
        processes.append(start_process(redis_server_command(redis_port), env=env, log=work / "redis.log"))
        log("migrating")
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        setup_django(database_url)
        log(f"filling {args.rows:,} jobs")
        fill_seconds = fill(args.rows)
        log(f"filled in {fill_seconds:.1f} s")
        for label, query in FILTERS:
            explain(query)  # once to warm the cache, then the plan that counts
            plan, matching, used, sql_ms = explain(query)
            plans[query] = {"matching": matching, "indexes": used, "sql_ms": sql_ms, "plan": plan}
            log(f"{label}: {matching:,} rows match; plan reads {used or 'no index'}; {sql_ms:.2f} ms")
        from django.db import connection

        connection.close()
        web = ["-m", "gunicorn", "sentinelflow_site.wsgi:application", "-b", f"127.0.0.1:{web_port}", "-w", "2"]
        processes.append(start_process([sys.executable, *web], env=env, cwd=ROOT, log=work / "web.log"))
        base_url = f"http://127.0.0.1:{web_port}"
        for _ in range(300):
            try:
                if requests.get(base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        log(f"timing {len(FILTERS)} filters, {args.requests} requests each, {args.readers} readers")
        samples, errors = time_filters(base_url, args.readers, args.requests)
    finally:
        for process in reversed(processes):
            stop_process(process)
        with psycopg.connect(PG_BASE + "postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    figures = {}
    for label, query in FILTERS:
        values = samples.get(query, [])
        figures[query] = {
            "label": label,
            "matching": plans[query]["matching"],
            "indexes": plans[query]["indexes"],
            "sql_ms": plans[query]["sql_ms"],
            "requests": len(values),
            "p50_ms": round(percentile(values, 0.50), 2) if values else None,
            "p99_ms": round(percentile(values, 0.99), 2) if values else None,
            "max_ms": round(max(values), 2) if values else None,
        }
    missed = [query for query, entry in figures.items() if entry["p99_ms"] is None or entry["p99_ms"] > TARGET_P99_MS]
    verdict = "MISS" if missed or errors else "PASS"
    print()
    print(f"GET /jobs?<filter>&limit={PAGE} over {args.rows:,} jobs, {args.readers} readers, {args.requests} each")
    print(f"{'filter':<28} {'matching':>9} {'sql ms':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  index")
    for query, entry in figures.items():
        print(
            f"{query:<28} {entry['matching']:>9,} {entry['sql_ms']:>7.2f} {entry['p50_ms'] or 0:>8.2f}"
            f" {entry['p99_ms'] or 0:>8.2f} {entry['max_ms'] or 0:>8.2f}  {entry['indexes']}"
        )
    print("(sql ms: the first page's EXPLAIN ANALYZE execution time; p50/p99/max: the whole request)")
    print(f"read errors: {errors}; fill: {fill_seconds:.1f} s")
    print(f"target: p99 of every filter <= {TARGET_P99_MS:g} ms: {verdict}", f"({', '.join(missed)})" if missed else "")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"labels-{stamp}.json"
    record = {
        "benchmark": "labels",
        "rows": args.rows,
        "page_size": PAGE,
        "readers": args.readers,
        "requests_per_filter": args.requests,
        "fill_seconds": round(fill_seconds, 2),
        "filters": figures,
        "read_errors": errors,
        "target_p99_ms": TARGET_P99_MS,
        "verdict": verdict,
        "plans": {query: plans[query]["plan"] for query in plans},
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
