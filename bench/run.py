"""Benchmark suite: sentinelflow against raw RQ, scenario by scenario, in one run.

    python bench/run.py [--db sqlite|postgres] [--quick] [--only 1,3|peers] [--worker-args "..."]
                        [--io-worker-args "..."|auto|none] [--drain-cap S] [--io-cap S]

Starts its own private redis-server, a fresh database (PostgreSQL when a server answers on
127.0.0.1:5432, as a new database sentinelflow_bench_<hex> that is dropped at the end; else SQLite),
migrates it, serves the app as in production (gunicorn -c sentinelflow_site/gunicorn.conf.py, 2 web
workers, prometheus multiprocess mode) and a bare DRF + RQ reference app (bench/raw_rq, gunicorn -w 2),
and starts workers per phase (`manage.py rqworker high default low [--worker-args]`; the reference uses
`rq worker` with SimpleWorker and with the default fork Worker). Every scenario measures sentinelflow
AND the raw-RQ reference in the same run, on the same Redis; scenario 8 also measures the durable peers
(django-tasks, Procrastinate, django-q2, Celery; bench/peers/, installed from bench/requirements.txt into
.venv-bench). Prints one table (with the targets and PASS/MISS) and scenario 8's side-by-side table, saves
JSON under bench/results/run-<UTC stamp>.json, and stops everything it started.

Scenarios (see docs/performance.md for how each is measured):
  1 drain 5,000 echo jobs with 1 and 2 worker processes      5 1,000 x sleep(0.1) with 2 worker processes
  2 single submit, 16 clients; p99 at a steady 200 req/s    6 GET /jobs p99 at 200k rows; /metrics p99 at 10k queued
  3 batch submit of 500 jobs                                 7 peak RSS of a web worker and of an rqworker
  4 latency at a steady 200 jobs/s with 2 workers          8 (peers) the durable peers, 2 worker processes each: drain,
                                                               single and bulk enqueue, latency at 200/s

Every loop is bounded: drains stop at --drain-cap / --io-cap seconds and report the rate measured until
then (the table says "partial n/N"), so scenarios 1-7 stay under 5 minutes on 2 cores (8, the peers, about 5 more).

The parts: bench/stack.py (the processes), bench/loads.py (load generators, submit and drain),
bench/scenarios/ (one module per scenario), bench/report.py (rows and the table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

# Run as `python bench/run.py`: the repository root goes on sys.path, so that `bench`, `jobs` and
# `sentinelflow_site` import as packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, SIZES, START, log  # noqa: E402
from bench.report import Row, print_table  # noqa: E402
from bench.scenarios import ALIASES, SCENARIOS  # noqa: E402
from bench.stack import Stack, postgres_answers, worker_modes  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], help="default: postgres if 127.0.0.1:5432 answers")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", default="", help="comma-separated scenarios, e.g. 1,3 or peers (7 needs 1: added)")
    parser.add_argument(
        "--worker-args",
        default=os.environ.get("BENCH_WORKER_ARGS", ""),
        help='extra arguments for every sentinelflow rqworker, e.g. "--worker-class X" (env BENCH_WORKER_ARGS)',
    )
    parser.add_argument(
        "--io-worker-args",
        default=os.environ.get("BENCH_IO_WORKER_ARGS", "auto"),
        help="rqworker arguments for scenario 5; 'auto' runs the worker's thread mode (WORKER_CONCURRENCY=16); "
        "'none' forces the default worker (env BENCH_IO_WORKER_ARGS)",
    )
    parser.add_argument("--drain-cap", type=float, help="seconds each drain phase of scenario 1 may run")
    parser.add_argument("--io-cap", type=float, help="seconds each drain of scenario 5 may run")
    args = parser.parse_args()
    if args.db is None:
        args.db = "postgres" if postgres_answers() else "sqlite"
    selected = [ALIASES.get(s.strip(), s.strip()) for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in selected if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    if "7" in selected and "1" not in selected:
        selected.insert(0, "1")
    selected = sorted(set(selected), key=int)
    sizes = SIZES["quick" if args.quick else "full"]

    stack = Stack(args, sizes)
    rows: list[Row] = []
    data: dict = {}
    errors: dict[str, str] = {}
    load: dict[str, dict] = {}  # the machine is shared: the load averages say how noisy each scenario was
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log(f"sentinelflow bench: db={args.db} sizes={'quick' if args.quick else 'full'} scenarios={','.join(selected)}")
    try:
        stack.start_redis()
        stack.create_database()
        stack.migrate()
        stack.setup_django()
        stack.worker_modes = worker_modes()
        log(f"worker modes: {json.dumps(stack.worker_modes)}")
        stack.start_web()
        stack.start_ref()
        log(f"web on :{stack.web_port}, bare DRF+RQ on :{stack.ref_port}, redis on :{stack.redis_port}")
        for key in selected:
            log(f"scenario {key}: {SCENARIOS[key].__doc__.splitlines()[0]}")
            load[key] = {"before": os.getloadavg()}
            try:
                rows += SCENARIOS[key](stack, data)
            except Exception as error:  # noqa: BLE001 - one broken scenario must not lose the others
                errors[key] = "".join(traceback.format_exception(error))
                log(f"scenario {key} FAILED: {error}")
                rows.append(Row(key, "error", None, None, "", verdict="BLOCKED", note=str(error).splitlines()[0]))
                for proc in [p for p in stack.procs if p.bench_name.startswith("bench-")]:  # type: ignore[attr-defined]
                    stack.stop([proc])
                try:
                    stack.reset()
                except Exception:  # noqa: BLE001
                    pass
            load[key]["after"] = os.getloadavg()
    finally:
        stack.stop_all()
        try:
            stack.drop_database()
        finally:
            shutil.rmtree(stack.workdir, ignore_errors=True)

    wall = time.monotonic() - START
    print(f"sentinelflow vs raw RQ — db {args.db}, {'quick' if args.quick else 'full'} sizes, {os.cpu_count()} CPUs")
    table = print_table(rows)
    peers_table = data.get("8", {}).get("table")
    if peers_table:
        print("durable peers on PostgreSQL, 2 worker processes each, in this run (enqueue/s: one client, one")
        print("call per job; bulk/s: 500 per call; start: enqueue->start at 200 jobs/s; raw RQ and sentinelflow")
        print("latency from scenario 4 when it ran)")
        print(peers_table + "\n")
    print(f"total wall time {wall:.0f} s; 1-min load average per scenario (before/after): ", end="")
    print(", ".join(f"{k}: {v['before'][0]:.1f}/{v.get('after', (0,))[0]:.1f}" for k, v in load.items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "run",
        "when": stamp,
        "db": args.db,
        "quick": args.quick,
        "scenarios": selected,
        "worker_args": args.worker_args,
        "io_worker_args": args.io_worker_args,
        "worker_modes": stack.worker_modes,
        "batch_probe_status": stack.batch_status,
        "sizes": sizes,
        "cpus": os.cpu_count(),
        "wall_seconds": wall,
        "rows": [asdict(r) for r in rows],
        "table": table,
        "peers_table": peers_table,
        "data": data,
        "load_average": load,
        "errors": errors,
    }
    path = RESULTS / f"run-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"saved {path.relative_to(ROOT)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
