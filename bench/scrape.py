"""Benchmark: the cost of a /metrics scrape with 10,000 jobs queued, against raw RQ's own stats calls.

Starts a private redis-server and a gunicorn web server (2 workers, multiprocess metrics, as
scripts/run.sh does) on a fresh SQLite database, queues N jobs, then times:
  - sentinelflow: GET /metrics over HTTP (p50/p99), and the job collector alone in-process;
  - raw RQ: the calls an RQ dashboard makes for the same figures (queue counts, registry counts,
    worker count), in-process on the same Redis.
Prints a table, saves JSON under bench/results/, stops everything it started.

    python bench/scrape.py [--jobs 10000] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

# Run as `python bench/scrape.py`: the repository root goes on sys.path, so that `bench`, `jobs` and
# `sentinelflow_site` import as packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, percentile  # noqa: E402
from sentinelflow_site.processes import (  # noqa: E402
    child_environment,
    free_port,
    redis_server_command,
    start_process,
    stop_process,
)


def timed(call, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sentinelflow-bench-"))
    redis_port, web_port = free_port(), free_port()
    env = child_environment(
        drop={"TESTING"},
        ENV_FILE=os.devnull,  # a developer's .env must not change what the bench measures
        DEBUG="0",
        SECRET_KEY="bench",
        API_KEY="bench-key",
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "prom"),
        BIND=f"127.0.0.1:{web_port}",
        WEB_CONCURRENCY="2",
    )
    (workdir / "prom").mkdir()
    processes: list[subprocess.Popen] = []
    try:
        processes.append(
            start_process(redis_server_command(redis_port), env=env, cwd=workdir, log=workdir / "redis.log")
        )
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        passed_on = ("ENV_FILE", "DEBUG", "SECRET_KEY", "API_KEY", "REDIS_URL", "DATABASE_URL")
        os.environ.update({k: env[k] for k in passed_on})
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinelflow_site.settings")
        import django

        django.setup()
        import requests
        from prometheus_client import CollectorRegistry, generate_latest
        from rq import Queue, Worker
        from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

        from jobs import redis_store
        from jobs.metrics import JobMetricsCollector
        from jobs.models import Job
        from jobs.tasks import run_job

        deadline = time.monotonic() + 10
        while True:
            try:
                redis_store.connection().ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

        rows = Job.objects.bulk_create(
            [Job(type="echo", payload={}, timeout=60, status="queued") for _ in range(args.jobs)], batch_size=1000
        )
        queue = redis_store.queue("default")
        for start in range(0, len(rows), 1000):
            queue.enqueue_many(
                [
                    Queue.prepare_data(run_job, args=(str(job.job_id),), job_id=str(job.job_id))
                    for job in rows[start : start + 1000]
                ]
            )
        assert queue.count == args.jobs, queue.count

        processes.append(
            start_process(
                [sys.executable, "-m", "gunicorn", "-c", "sentinelflow_site/gunicorn.conf.py"]
                + ["sentinelflow_site.wsgi:application"],
                env=env,
                cwd=ROOT,
                log=workdir / "web.log",
            )
        )
        url = f"http://127.0.0.1:{web_port}/metrics"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("gunicorn did not start")
            time.sleep(0.2)

        session = requests.Session()
        body = session.get(url).text
        assert f'jobs_queue_depth{{queue="default"}} {float(args.jobs)}' in body, "queue depth not in the scrape"
        http = timed(lambda: session.get(url).raise_for_status(), args.scrapes)

        registry = CollectorRegistry()
        registry.register(JobMetricsCollector())
        collector = timed(lambda: generate_latest(registry), args.scrapes)

        connection = redis_store.connection()
        queues = redis_store.queues()

        def raw_rq_stats():
            for q in queues:
                q.count  # noqa: B018 - each is a Redis call, as RQ dashboards make them
                StartedJobRegistry(queue=q).count  # noqa: B018
                FinishedJobRegistry(queue=q).count  # noqa: B018
                FailedJobRegistry(queue=q).count  # noqa: B018
            Worker.count(connection=connection)

        raw = timed(raw_rq_stats, args.scrapes)
    finally:
        for process in reversed(processes):
            stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [
        ("sentinelflow GET /metrics (HTTP, gunicorn)", http),
        ("sentinelflow job collector (in-process)", collector),
        ("raw RQ stats calls (in-process)", raw),
    ]
    print(f"\n/metrics scrape with {args.jobs:,} jobs queued, {args.scrapes} scrapes each")
    print(f"{'measure':<45} {'p50 ms':>8} {'p99 ms':>8}")
    for name, samples in rows:
        print(f"{name:<45} {statistics.median(samples):>8.2f} {percentile(samples, 0.99):>8.2f}")
    ratio = statistics.median(collector) / statistics.median(raw)
    print(f"collector / raw RQ (p50): {ratio:.2f}x; HTTP scrape p99 target <= 100 ms\n")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "benchmark": "scrape",
        "when": stamp,
        "jobs_queued": args.jobs,
        "scrapes": args.scrapes,
        "results_ms": {name: {"p50": statistics.median(s), "p99": percentile(s, 0.99)} for name, s in rows},
        "collector_over_raw_rq_p50": ratio,
    }
    path = RESULTS / f"scrape-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
