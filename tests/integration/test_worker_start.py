"""A worker started while Redis does not answer waits for it, naming REDIS_URL, then listens on its queues."""

from __future__ import annotations

import signal
import sys

import pytest

from sentinelflow_site.processes import free_port, redis_server_command

from .harness import Stack, spawn, stop, wait_until

pytestmark = pytest.mark.integration


def test_worker_started_before_redis_names_redis_url_waits_then_listens(stack: Stack, tmp_path):
    port = free_port()
    redis_url = f"redis://:s3cret@127.0.0.1:{port}/0"
    worker = spawn(
        "rqworker-before-redis",
        [sys.executable, "manage.py", "rqworker", "high", "default", "low"],
        env=stack.env(REDIS_URL=redis_url),
        log_dir=stack.log_dir,
    )
    server = None
    try:
        wanted = f"Redis at REDIS_URL=redis://:***@127.0.0.1:{port}/0 does not answer"
        wait_until(lambda: wanted in worker.output(), timeout=30, message=worker.output)
        assert worker.alive(), worker.output()
        assert "s3cret" not in worker.output()

        args = redis_server_command(port, "--requirepass", "s3cret", data_dir=tmp_path)
        server = spawn("redis-server-late", args, env=stack.env(), log_dir=stack.log_dir)
        wait_redis_with_password(server, port)

        wait_until(lambda: "Listening on" in worker.output(), timeout=60, message=worker.output)
        assert worker.alive(), worker.output()
    finally:
        stop(worker, signals=(signal.SIGTERM, signal.SIGTERM))
        if server is not None:
            stop(server)


def wait_redis_with_password(process, port: int) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password="s3cret", socket_connect_timeout=1)
    try:
        wait_until(lambda: _pings(client), timeout=20, message=process.output)
    finally:
        client.close()


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
