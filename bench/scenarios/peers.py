"""Scenario 8 of bench/run.py, peers: what it measures is in the docstring below and bench/README.md."""

from __future__ import annotations

import hashlib
import json
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench.common import PG_BASE, RAW_QUEUE, ROOT, SIMPLE, log
from bench.loads import drain, echo_body, has_batch, raw_done, sf_done
from bench.report import PeerLine, Row, drain_note, peer_table, ratio, verdict
from bench.stack import Stack

# The durable peers: package under bench/peers, and the name the table shows (the package's peer.NAME).
PEERS = {
    "djtasks": "django-tasks",
    "procrastinate_pg": "Procrastinate",
    "djangoq": "django-q2",
    "celery_results": "Celery",
}
VENV = ROOT / ".venv-bench"
REQUIREMENTS = ROOT / "bench" / "requirements.txt"
SINGLE_JOBS = 1000  # of the backlog, at most this many enqueued one call at a time (the single enqueue rate)
BULK_BATCH = 500  # jobs per bulk call, as scenario 3's batch


def scenario_8_peers(stack: Stack, data: dict) -> list[Row]:
    """The durable peers (django-tasks, Procrastinate, django-q2, Celery) on PostgreSQL, 2 worker processes:
    drain, single and bulk enqueue, latency at 200/s; next to raw RQ and sentinelflow."""
    n, cap = stack.sizes["drain_jobs"], stack.args.drain_cap or stack.sizes["drain_cap"]
    out: dict = {"jobs": n, "cap_seconds": cap, "peers": {}}
    data["8"] = out
    if stack.pg_database is None:
        out["error"] = "not measured: the peers run on PostgreSQL (Procrastinate needs it); this run is on SQLite"
        log(f"8: {out['error']}")
        return [Row("8 peers", "durable peers", None, None, "", note=out["error"])]

    out["raw_rq"] = raw_reference(stack, data, n, cap)
    out["sentinelflow"] = sf_reference(stack, data, n, cap)
    python, reason = peer_venv()
    out["venv"] = {"python": str(python) if python else None, "error": reason}
    for key, name in PEERS.items():
        if python is None:
            out["peers"][key] = {"peer": name, "error": reason}
        else:
            out["peers"][key] = run_peer(stack, python, key, n, cap)
        result = out["peers"][key]
        if "error" in result:
            log(f"8: {name} not measured: {result['error']}")
        else:
            log(f"8: {name}: drain {result['drain']['rate']:.0f} jobs/s ({drain_note(result['drain'])})")
    return table(out)


def raw_reference(stack: Stack, data: dict, n: int, cap: float) -> dict:
    """raw RQ: single `enqueue` and `enqueue_many` of 500 from this process; the drain with 2 SimpleWorkers is
    scenario 1's when it ran, else measured here."""
    from rq import Queue

    from bench.raw_rq.tasks import noop

    stack.reset()
    q = Queue(RAW_QUEUE, connection=stack.redis)
    single = min(n // 2, SINGLE_JOBS)
    began = time.perf_counter()
    for _ in range(single):
        q.enqueue(noop, result_ttl=3600)
    seconds = time.perf_counter() - began
    out: dict = {"enqueue_single": {"jobs": single, "seconds": seconds, "rate": single / seconds}}
    rest = n - single
    began = time.perf_counter()
    for start in range(0, rest, BULK_BATCH):
        count = min(BULK_BATCH, rest - start)
        q.enqueue_many([Queue.prepare_data(noop, result_ttl=3600) for _ in range(count)])
    seconds = time.perf_counter() - began
    out["enqueue_bulk"] = {"jobs": rest, "batch": BULK_BATCH, "seconds": seconds, "rate": rest / seconds}
    if "1" in data and "simple_2_procs" in data["1"].get("raw_rq", {}):
        out["drain"] = data["1"]["raw_rq"]["simple_2_procs"] | {"from": "scenario 1"}
    else:
        workers = stack.start_raw_workers(2, SIMPLE)
        out["drain"] = drain(stack, workers, raw_done(stack), n, cap) | {"from": "scenario 8"}
    if "4" in data and "raw_rq" in data["4"]:
        out["latency"] = data["4"]["raw_rq"]["enqueue_to_start_ms"]
    stack.reset()
    return out


def sf_reference(stack: Stack, data: dict, n: int, cap: float) -> dict:
    """sentinelflow over HTTP, one client: single `POST /jobs` and `POST /jobs/batch` of 500; the drain with
    2 worker processes is scenario 1's when it ran, else measured here."""
    stack.reset()
    single = min(n // 2, SINGLE_JOBS)
    body = json.dumps(echo_body(0)).encode()
    began = time.perf_counter()
    stored = sum(stack.sf_http.request("POST", "/jobs", body)[0] == 201 for _ in range(single))
    seconds = time.perf_counter() - began
    out: dict = {"enqueue_single": {"jobs": stored, "seconds": seconds, "rate": stored / seconds}}
    rest = n - stored
    if has_batch(stack):
        began, stored = time.perf_counter(), 0
        for start in range(0, rest, BULK_BATCH):
            chunk = [echo_body(i) for i in range(start, min(rest, start + BULK_BATCH))]
            if stack.sf_http.request("POST", "/jobs/batch", json.dumps({"jobs": chunk}).encode())[0] == 201:
                stored += len(chunk)
        seconds = time.perf_counter() - began
        out["enqueue_bulk"] = {"jobs": stored, "batch": BULK_BATCH, "seconds": seconds, "rate": stored / seconds}
    if "1" in data and "2_procs" in data["1"].get("sentinelflow", {}):
        out["drain"] = data["1"]["sentinelflow"]["2_procs"] | {"from": "scenario 1"}
    else:
        total = stack.count(status="queued")
        workers = stack.start_sf_workers(2, shlex.split(stack.args.worker_args))
        out["drain"] = drain(stack, workers, sf_done(stack), total, cap) | {"from": "scenario 8"}
    if "4" in data and "sentinelflow" in data["4"]:
        out["latency"] = data["4"]["sentinelflow"]["enqueue_to_start_ms"]
    stack.reset()
    return out


def peer_venv() -> tuple[Path | None, str]:
    """.venv-bench, created or brought up to bench/requirements.txt (a marker holds the file's hash):
    (its python, "") or (None, why not)."""
    python = VENV / "bin" / "python"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    marker = VENV / "bench-requirements.sha256"
    if python.exists() and marker.exists() and marker.read_text().strip() == digest:
        return python, ""
    log(f"8: installing bench/requirements.txt into {VENV.name} (once per change of the file)")
    try:
        venv = [sys.executable, "-m", "venv", "--clear", str(VENV)]
        subprocess.run(venv, check=True, capture_output=True, timeout=300)
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"creating {VENV.name} failed: {error}"
    if pip.returncode:
        lines = [line for line in pip.stderr.splitlines() if line.startswith("ERROR")] or pip.stderr.splitlines()[-1:]
        return None, f"pip install -r bench/requirements.txt failed: {' '.join(lines)[:300]}"
    marker.write_text(digest + "\n")
    return python, ""


def run_peer(stack: Stack, python: Path, key: str, n: int, cap: float) -> dict:
    """One peer in its own database (created here, dropped after), measured by bench/peers/driver.py in .venv-bench."""
    import psycopg

    database = f"sentinelflow_bench_peer_{key}_{secrets.token_hex(3)}"
    result_file = stack.workdir / f"peer-{key}.json"
    sizes = stack.sizes
    argv = [str(python), "-m", "bench.peers.driver", key, "--out", str(result_file), "--logs", str(stack.workdir)]
    argv += ["--jobs", str(n), "--cap", str(cap), "--single-jobs", str(SINGLE_JOBS), "--bulk-batch", str(BULK_BATCH)]
    argv += ["--latency-rate", str(sizes["latency_rate"]), "--latency-seconds", str(sizes["latency_seconds"])]
    argv += ["--latency-wait", str(sizes["latency_wait"])]
    env = stack.base_env() | {
        "DJANGO_SETTINGS_MODULE": f"bench.peers.{key}.settings",
        "PEER_DATABASE": database,
        "PEER_REDIS_URL": stack.redis_url,
        "PEER_LATENCY_FILE": str(stack.workdir / f"peer-{key}-stamps"),
    }
    # Start-up, a backlog enqueued one by one at a few hundred a second, the drain, the latency run.
    budget = 120 + n / 50 + cap + sizes["latency_seconds"] + sizes["latency_wait"]
    stack.redis.flushall()
    with psycopg.connect(PG_BASE + "postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    proc = stack.spawn(f"peer-{key}", argv, env)
    try:
        try:
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            pass
        timed_out = proc.poll() is None
        stack.stop([proc])
        result = json.loads(result_file.read_text()) if result_file.exists() else {"peer": PEERS[key]}
        if timed_out:
            result["error"] = f"timed out after {budget:.0f} s in {result.get('stage', 'start-up')}"
        elif proc.returncode and "error" not in result:
            result["error"] = f"exited {proc.returncode}: {stack.tail(proc, 1)}"
        result["database"] = database
        return result
    finally:
        stack.redis.flushall()
        with psycopg.connect(PG_BASE + "postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def table(out: dict) -> list[Row]:
    """The side-by-side table (data['8']['table'], printed after the main one) and the main table's rows."""
    raw, sf = out["raw_rq"], out["sentinelflow"]
    raw_rate = raw["drain"]["rate"]
    lines = [
        PeerLine("raw RQ", "2 SimpleWorkers (keeps nothing)", raw["drain"], raw_rate, raw, ""),
        PeerLine("sentinelflow", "2 rqworker processes", sf["drain"], raw_rate, sf, "HTTP, one client"),
    ]
    measured = {}
    for key, result in out["peers"].items():
        if "error" in result:
            name = result.get("peer", PEERS[key])
            lines.append(PeerLine(name, "", None, raw_rate, {}, f"not measured: {result['error']}"))
            continue
        measured[result["peer"]] = result["drain"]["rate"]
        late = result.get("latency", {})
        note = ""
        if late.get("unfinished_at_cutoff"):  # it could not keep up: say by how much, the figures are lower bounds
            note = f"backlog {late.get('backlog_at_last_send', '?')} at the last send, "
            note += f"{late['unfinished_at_cutoff']} not started at the cut-off"
        enqueue = {"enqueue_single": result.get("enqueue_single"), "enqueue_bulk": result.get("enqueue_bulk")}
        enqueue["latency"] = late.get("enqueue_to_start_ms")
        lines.append(PeerLine(result["peer"], result["worker"], result["drain"], raw_rate, enqueue, note))
    out["table"] = peer_table(lines)

    sf_rate = sf["drain"]["rate"]
    rows = [
        Row("8 peers", f"drain 2 procs vs {name}", sf_rate, rate, "jobs/s", ratio(sf_rate, rate))
        for name, rate in measured.items()
    ]
    rows += [
        Row("8 peers", f"vs {result.get('peer', PEERS[key])}", None, None, "", note=f"not measured: {result['error']}")
        for key, result in out["peers"].items()
        if "error" in result
    ]
    if measured:
        name, rate = max(measured.items(), key=lambda item: item[1])
        r = ratio(sf_rate, rate)
        peer_drain = out["peers"][key_of(out, name)]["drain"]
        rows.append(
            Row(
                "8 peers",
                f"drain vs fastest peer ({name})",
                sf_rate,
                rate,
                "jobs/s",
                r,
                ">= 1.0x",
                verdict(r is not None and r >= 1.0),
                f"sf {drain_note(sf['drain'])} ({sf['drain']['from']}); peer {drain_note(peer_drain)}",
            )
        )
    return rows


def key_of(out: dict, name: str) -> str:
    return next(key for key, result in out["peers"].items() if result.get("peer") == name)
