"""Benchmark: retention pruning on PostgreSQL while the list endpoint serves (issue 18).

Fills a fresh PostgreSQL database with N finished jobs (90% past the 7-day retention of
`succeeded`, 10% recent) and two timeline rows each, starts a private redis-server and gunicorn,
then times GET /jobs (the first page, and the first page of `?status=succeeded`) from reader
threads: first while nothing else runs, then while `manage.py prune_jobs` deletes the old
rows in batches. Prints a table (p50/p99/max per phase, prune time and rate), saves JSON under
bench/results/, stops everything it started by pid and drops the database.

    python bench/prune.py [--rows 1000000] [--batch-size 1000] [--readers 2]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, as the other benchmarks). The issue's target:
p99 of GET /jobs under 50 ms while 1,000,000 rows are pruned.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

# Run as `python bench/prune.py`: the repository root goes on sys.path, so that `bench`, `jobs` and
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

OLD_FRACTION = 0.9  # of the rows: finished 10 days ago, past the 7 days of `succeeded`
TARGET_P99_MS = 50.0
PATHS = ["/jobs?limit=50", "/jobs?limit=50&status=succeeded"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="Finished jobs to fill (default 1,000,000).")
    parser.add_argument("--batch-size", type=int, default=1000, help="prune_jobs --batch-size (default 1000).")
    parser.add_argument("--readers", type=int, default=2, help="Threads reading GET /jobs (default 2).")
    parser.add_argument("--baseline-seconds", type=float, default=10, help="Reads before pruning (default 10).")
    return parser.parse_args()


def fill(database_url: str, rows: int) -> float:
    """Insert the jobs and their events with INSERT ... SELECT (all columns from the model, so columns
    added later with defaults fill themselves); returns seconds."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinelflow_site.settings")
    os.environ.setdefault("SECRET_KEY", "bench-prune")
    import django

    django.setup()
    from django.db import connection

    from jobs.models import Job, JobEvent

    old = int(rows * OLD_FRACTION)
    # Per-row expressions; every other column takes the model's default, as a parameter.
    finished = f"CASE WHEN n <= {old} THEN now() - interval '10 days' ELSE now() - interval '1 day' END"
    expressions = {
        "id": None,
        "job_id": "gen_random_uuid()",
        "type": "'echo'",
        "status": "'succeeded'",
        "attempts": "1",
        "timeout": "60",
        "payload": """jsonb_build_object('n', n)""",
        "result": """jsonb_build_object('n', n)""",
        "submitted_by": "'api-key:bench'",
        "created_at": f"({finished}) - interval '1 second'",
        "enqueued_at": f"({finished}) - interval '1 second'",
        "started_at": f"({finished}) - interval '100 milliseconds'",
        "finished_at": finished,
        "updated_at": finished,
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
        cursor.execute(
            f"INSERT INTO {Job._meta.db_table} ({', '.join(columns)}) "
            f"SELECT {', '.join(values)} FROM generate_series(1, %s) AS n",
            [*params, rows],
        )
        event = JobEvent._meta.db_table
        cursor.execute(
            f"INSERT INTO {event} (job_id, at, from_status, to_status, actor, note) "
            f"SELECT id, created_at, '', 'queued', 'api-key:bench', '' FROM {Job._meta.db_table} "
            f"UNION ALL SELECT id, finished_at, 'queued', 'succeeded', 'worker:bench', '' FROM {Job._meta.db_table}"
        )
        cursor.execute(f"ANALYZE {Job._meta.db_table}")
        cursor.execute(f"ANALYZE {event}")
    connection.close()
    return time.perf_counter() - began


class Readers:
    """Threads that GET the list endpoint in a loop, keeping each latency with the phase it fell in."""

    def __init__(self, base_url: str, count: int) -> None:
        self.base_url = base_url
        self.phase = "baseline"
        self.samples: dict[str, list[float]] = {}
        self.errors = 0
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._read, args=(index,), daemon=True) for index in range(count)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _read(self, index: int) -> None:
        session = requests.Session()
        session.headers["X-API-Key"] = API_KEY
        turn = index
        while not self.stopping.is_set():
            phase, path = self.phase, PATHS[turn % len(PATHS)]
            turn += 1
            began = time.perf_counter()
            try:
                response = session.get(self.base_url + path, timeout=30)
                ok = response.status_code == 200
            except requests.RequestException:
                ok = False
            elapsed = (time.perf_counter() - began) * 1000
            if ok:
                self.samples.setdefault(phase, []).append(elapsed)
            else:
                self.errors += 1


def main() -> int:
    args = parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"sentinelflow_bench_prune_{secrets.token_hex(4)}"
    database_url = PG_BASE + name
    work = Path(tempfile.mkdtemp(prefix="sf-bench-prune-"))
    processes: list[subprocess.Popen] = []
    import psycopg

    with psycopg.connect(PG_BASE + "postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        redis_port, web_port = free_port(), free_port()
        env = child_environment(
            DATABASE_URL=database_url,
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            API_KEY=API_KEY,
            SECRET_KEY="bench-prune",
            DEBUG="0",
            ALLOWED_HOSTS="127.0.0.1",
            THROTTLE_RATE_ANON="100000/s",
            LOG_LEVEL="WARNING",
        )
        processes.append(start_process(redis_server_command(redis_port), env=env, log=work / "redis.log"))
        log("migrating")
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        log(f"filling {args.rows:,} jobs and {2 * args.rows:,} timeline rows")
        fill_seconds = fill(database_url, args.rows)
        log(f"filled in {fill_seconds:.1f} s")
        web = ["-m", "gunicorn", "sentinelflow_site.wsgi:application", "-b", f"127.0.0.1:{web_port}", "-w", "2"]
        processes.append(start_process([sys.executable, *web], env=env, cwd=ROOT, log=work / "web.log"))
        base_url = f"http://127.0.0.1:{web_port}"
        for _ in range(200):
            try:
                if requests.get(base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        readers = Readers(base_url, args.readers)
        readers.start()
        time.sleep(args.baseline_seconds)
        readers.phase = "pruning"
        log("pruning")
        began = time.perf_counter()
        prune = subprocess.run(
            [sys.executable, "manage.py", "prune_jobs", "--batch-size", str(args.batch_size)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        prune_seconds = time.perf_counter() - began
        readers.stop()
        log(prune.stdout.strip())
    finally:
        for process in reversed(processes):
            stop_process(process)
        with psycopg.connect(PG_BASE + "postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    pruned = int(args.rows * OLD_FRACTION)
    phases = {}
    for phase in ("baseline", "pruning"):
        samples = readers.samples.get(phase, [])
        phases[phase] = {
            "requests": len(samples),
            "p50_ms": round(percentile(samples, 0.50), 2) if samples else None,
            "p99_ms": round(percentile(samples, 0.99), 2) if samples else None,
            "max_ms": round(max(samples), 2) if samples else None,
        }
    p99 = phases["pruning"]["p99_ms"]
    verdict = "PASS" if p99 is not None and p99 <= TARGET_P99_MS else "MISS"
    print()
    print(f"Pruning {pruned:,} of {args.rows:,} finished jobs (batch {args.batch_size}), {args.readers} readers")
    print(f"{'phase':<10} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for phase, figures in phases.items():
        print(
            f"{phase:<10} {figures['requests']:>9} {figures['p50_ms'] or 0:>8.2f} {figures['p99_ms'] or 0:>8.2f}"
            f" {figures['max_ms'] or 0:>8.2f}"
        )
    print(f"prune: {prune_seconds:.1f} s, {pruned / prune_seconds:,.0f} jobs/s; read errors: {readers.errors}")
    print(f"target: p99 of GET /jobs while pruning <= {TARGET_P99_MS:g} ms: {verdict}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"prune-{stamp}.json"
    record = {
        "benchmark": "prune",
        "rows": args.rows,
        "pruned": pruned,
        "batch_size": args.batch_size,
        "readers": args.readers,
        "fill_seconds": round(fill_seconds, 2),
        "prune_seconds": round(prune_seconds, 2),
        "phases": phases,
        "read_errors": readers.errors,
        "target_p99_ms": TARGET_P99_MS,
        "verdict": verdict,
        "prune_output": prune.stdout.strip(),
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
