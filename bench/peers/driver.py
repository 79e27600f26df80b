"""One durable peer's measurements, run inside .venv-bench by bench/scenarios/peers.py:

    python -m bench.peers.driver PEER --out result.json --jobs N --cap S [--latency-rate R ...]

PEER is a package of bench/peers (djtasks, procrastinate_pg, djangoq, celery_results); the environment
names its settings (DJANGO_SETTINGS_MODULE) and its private database (PEER_DATABASE, which the caller
created and drops). In order: migrate; enqueue N no-ops, part one call at a time (single enqueue rate)
and the rest through the peer's bulk call if it has one (bulk enqueue rate); start the peer's worker
(2 processes) and time the drain until its database records all N done (or --cap); delete what the drain
left waiting; with fresh workers, enqueue `stamp` jobs at a steady rate and read each job's enqueue->start
time. Writes the figures as JSON to
--out; every process it starts is stopped by pid before it exits (and gets SIGTERM if this one dies).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from sentinelflow_site.processes import start_process, stop_process

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0  # seconds for a freshly started worker to finish its first job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--logs", required=True, type=Path, help="folder for the workers' logs")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--cap", type=float, required=True, help="seconds the drain may run")
    parser.add_argument("--single-jobs", type=int, default=1000, help="of --jobs, at most this many one by one")
    parser.add_argument("--bulk-batch", type=int, default=500)
    parser.add_argument("--latency-rate", type=float, default=0)
    parser.add_argument("--latency-seconds", type=float, default=0)
    parser.add_argument("--latency-wait", type=float, default=10)
    args = parser.parse_args()
    peer = importlib.import_module(f"bench.peers.{args.peer}.peer")
    out: dict = {"peer": peer.NAME, "worker": peer.WORKER, "bulk_call": peer.BULK, "stage": "setup"}
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", interactive=False, verbosity=0)
        out["stage"] = "enqueue"
        out |= enqueue_backlog(peer, args)
        out["stage"] = "drain"
        out["drain"] = drain(peer, args, args.jobs)
        # A drain cut off at --cap leaves the rest of the backlog waiting; the latency run must not queue
        # behind it (its workers would spend the run on the drain's jobs), so it goes, and is counted.
        out["stage"] = "discard"
        out["drain"]["left_waiting_discarded"] = peer.discard_waiting()
        if args.latency_rate and args.latency_seconds:
            out["stage"] = "latency"
            out["latency"] = latency(peer, args)
        out["stage"] = "done"
        return 0
    except Exception as error:  # noqa: BLE001 - the caller reports the peer as not measured, with this reason
        out["error"] = f"{out['stage']}: {error.__class__.__name__}: {error}".splitlines()[0]
        raise
    finally:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


def enqueue_backlog(peer, args: argparse.Namespace) -> dict:
    """The drain's backlog of --jobs no-ops: with a bulk call, the first half (at most --single-jobs) one
    call per job and the rest in bulk calls of --bulk-batch; without one, every job one call each. Each
    way is timed: the single and bulk enqueue rates."""
    single = min(args.jobs // 2, args.single_jobs) if peer.BULK else args.jobs
    out = {}
    began = time.perf_counter()
    for _ in range(single):
        peer.enqueue_noop()
    seconds = time.perf_counter() - began
    out["enqueue_single"] = {"jobs": single, "seconds": seconds, "rate": single / seconds}
    if rest := args.jobs - single:
        began = time.perf_counter()
        for start in range(0, rest, args.bulk_batch):
            peer.enqueue_many(min(args.bulk_batch, rest - start))
        seconds = time.perf_counter() - began
        out["enqueue_bulk"] = {"jobs": rest, "batch": args.bulk_batch, "seconds": seconds, "rate": rest / seconds}
    return out


def start_workers(peer, args: argparse.Namespace, *, drain: bool, tag: str) -> list[subprocess.Popen]:
    procs = []
    for i in range(peer.COMMANDS):
        log = args.logs / f"{args.peer}-{tag}-{i}.log"
        argv = peer.worker_argv(drain=drain)
        proc = start_process(argv, env=dict(os.environ), cwd=ROOT, log=log, die_with_parent=True)
        procs.append(proc)
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        stop_process(proc, timeout=10)


def tail(args: argparse.Namespace, tag: str) -> str:
    lines: list[str] = []
    for log in sorted(args.logs.glob(f"{args.peer}-{tag}-*.log")):
        lines += log.read_text(errors="replace").splitlines()[-5:]
    return " | ".join(lines)


def drain(peer, args: argparse.Namespace, total: int) -> dict:
    """The clock starts when the database first records a job done (so a worker's start-up, which
    `rq worker` pays before it registers, is not counted); jobs done by then are subtracted."""
    procs = start_workers(peer, args, drain=True, tag="drain")
    try:
        spawned = time.perf_counter()
        while (c0 := peer.done()) == 0:
            if time.perf_counter() - spawned > STARTUP_TIMEOUT:
                raise RuntimeError(f"no job done {STARTUP_TIMEOUT:g} s after the start: {tail(args, 'drain')}")
            time.sleep(0.01)
        t0 = time.perf_counter()
        count, now = c0, t0
        while count < total and now - t0 < args.cap:
            time.sleep(0.05)
            count, now = peer.done(), time.perf_counter()
        return {
            "rate": (count - c0) / (now - t0) if now > t0 else 0.0,
            "done": count,
            "total": total,
            "seconds": now - t0,
            "complete": count >= total,
            "done_before_clock": c0,
            "start_to_first_done_seconds": t0 - spawned,
        }
    finally:
        stop_workers(procs)


def latency(peer, args: argparse.Namespace) -> dict:
    """`stamp(sent)` jobs at a steady rate; each appends `sent` and its enqueue->start time in ms to
    PEER_LATENCY_FILE. Up to --latency-wait seconds after the last send for the stragglers (as scenario 4);
    a job not started by the cut-off counts with the time it had waited then."""
    stamps = Path(os.environ["PEER_LATENCY_FILE"])
    procs = start_workers(peer, args, drain=False, tag="latency")
    try:
        base = peer.done()
        peer.enqueue_noop()  # the worker is up once it has run this one
        spawned = time.perf_counter()
        while peer.done() <= base:
            if time.perf_counter() - spawned > STARTUP_TIMEOUT:
                raise RuntimeError(f"no job done {STARTUP_TIMEOUT:g} s after the start: {tail(args, 'latency')}")
            time.sleep(0.02)
        stamps.write_text("")
        sent, due = open_loop(peer.enqueue_stamp, args.latency_rate, args.latency_seconds)
        started_by_last_send = len(read_stamps(stamps))
        deadline = time.monotonic() + args.latency_wait
        while len(read_stamps(stamps)) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.1)
        cutoff = time.time()
    finally:
        stop_workers(procs)
    started = read_stamps(stamps)
    waits = [started.get(repr(s), (cutoff - s) * 1000) for s in sent]
    ordered = sorted(waits)
    return {
        "rate": args.latency_rate,
        "due": due,
        "sent": len(sent),
        "started": sum(1 for s in sent if repr(s) in started),
        # Jobs sent but not yet started when the producers stopped: a peer that cannot keep up shows it here.
        "backlog_at_last_send": len(sent) - started_by_last_send,
        "unfinished_at_cutoff": sum(1 for s in sent if repr(s) not in started),
        "enqueue_to_start_ms": {
            "n": len(waits),
            "p50": statistics.median(waits) if waits else None,
            "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else None,
            "max": max(waits, default=None),
        },
    }


def read_stamps(path: Path) -> dict[str, float]:
    started = {}
    for line in path.read_text().splitlines():
        sent, _, ms = line.partition(" ")
        if ms:
            started[sent] = float(ms)
    return started


def open_loop(enqueue, rate: float, seconds: float, threads: int = 2) -> tuple[list[float], int]:
    """Job i is due at t0 + i/rate; `threads` producers (as the raw RQ latency reference); nothing is
    sent after seconds + 2. Returns each sent job's `sent` time and how many were due."""
    from django.db import connection

    total = int(rate * seconds)
    lock = threading.Lock()
    counter = iter(range(total))
    sent: list[float] = []
    t0 = time.perf_counter() + 0.05

    def producer() -> None:
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                due = t0 + i / rate
                if (delay := due - time.perf_counter()) > 0:
                    time.sleep(delay)
                if time.perf_counter() > t0 + seconds + 2:
                    return
                stamp = time.time()
                enqueue(stamp)
                with lock:
                    sent.append(stamp)
        finally:
            connection.close()

    workers = [threading.Thread(target=producer) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return sent, total


if __name__ == "__main__":
    sys.exit(main())
