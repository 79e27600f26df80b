"""The product on Redis Sentinel (REDIS_SENTINELS), on loopback: real redis-servers, three real sentinels.

A primary and a replica, three sentinels with quorum 2, and the product (gunicorn, one rqworker with the
scheduler, the sentinelflow sentinel) configured with REDIS_SENTINELS and a REDIS_URL whose host and port
answer nothing: every Redis user must find the primary through the sentinels. Then two failovers: a
commanded one (the old primary stays up and answers READONLY) and a killed primary (connections refused).
The web server, the worker and the sentinel carry on under the same process ids, and every accepted job
succeeds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from sentinelflow_site.processes import free_port

from .harness import API_KEY, QUEUES, REPO_ROOT, Api, Process, Stack, spawn, stop, wait_healthy, wait_redis, wait_until
from .redis_sentinels import SERVICE, agreed_primary, sentinel_command, server_command, wait_for_new_primary

pytestmark = pytest.mark.integration
HOST = "127.0.0.1"


class SentinelSet:
    def __init__(self, tmp: Path, log_dir: Path) -> None:
        self.tmp = tmp
        self.log_dir = log_dir
        self.servers: dict[int, Process] = {}
        self.sentinels: list[Process] = []
        self.sentinel_addresses: list[tuple[str, int]] = []

    def start_server(self, port: int, replica_of: int | None = None) -> None:
        data = self.tmp / f"redis-{port}"
        data.mkdir(exist_ok=True)
        command = server_command(HOST, port, data, replica_of=(HOST, replica_of) if replica_of else None)
        process = spawn(f"redis-{port}", command, env=dict(os.environ), log_dir=self.log_dir)
        self.servers[port] = process
        wait_redis(process, port)

    def start_sentinels(self, primary: int, count: int = 3) -> None:
        for _ in range(count):
            port = free_port()
            command = sentinel_command(HOST, port, (HOST, primary), self.tmp)
            process = spawn(f"sentinel-{port}", command, env=dict(os.environ), log_dir=self.log_dir)
            self.sentinels.append(process)
            self.sentinel_addresses.append((HOST, port))
            wait_redis(process, port)

    def stop_all(self) -> None:
        for process in [*self.sentinels, *self.servers.values()]:
            stop(process)


@pytest.fixture
def sentinel_set(tmp_path: Path, log_dir: Path) -> Iterator[SentinelSet]:
    redis_set = SentinelSet(tmp_path, log_dir)
    try:
        primary, replica = free_port(), free_port()
        redis_set.start_server(primary)
        redis_set.start_server(replica, replica_of=primary)
        redis_set.start_sentinels(primary)
        wait_until(
            lambda: agreed_primary(redis_set.sentinel_addresses) == (HOST, primary),
            timeout=20,
            message=lambda: "the sentinels never agreed on the primary",
        )
        yield redis_set
    finally:
        redis_set.stop_all()


def test_web_worker_and_sentinel_follow_the_primary_through_two_failovers(sentinel_set, database_url, log_dir):
    sentinels = ",".join(f"{host}:{port}" for host, port in sentinel_set.sentinel_addresses)
    nothing_there = free_port()
    stack = Stack(
        base_url=f"http://{HOST}:{free_port()}",
        redis_url=f"redis://{HOST}:{nothing_there}/0",  # only its database number is used
        database_url=database_url,
        log_dir=log_dir,
    )
    env = stack.env(REDIS_SENTINELS=sentinels, REDIS_SENTINEL_MASTER=SERVICE, SENTINEL_INTERVAL="1")
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=180
    )
    assert migrate.returncode == 0, migrate.stderr
    port = stack.base_url.rsplit(":", 1)[1]
    web_args = [sys.executable, "-m", "gunicorn", "sentinelflow_site.wsgi:application", "-b", f"{HOST}:{port}"]
    web_args += ["-w", "2", "--graceful-timeout", "5", "--no-control-socket"]
    manage = [sys.executable, "manage.py"]
    processes = [
        spawn("sentinel-web", web_args, env=env, log_dir=log_dir),
        spawn("sentinel-worker", [*manage, "rqworker", *QUEUES, "--with-scheduler"], env=env, log_dir=log_dir),
        spawn("sentinel-repairs", [*manage, "sentinel"], env=env, log_dir=log_dir),
    ]
    web, worker, _repairs = processes
    api = Api(stack.base_url)
    accepted: list[str] = []

    def submit(**body) -> int:
        try:
            response = api.post("/jobs", {"type": "echo", "payload": {"n": len(accepted)}, **body})
        except requests.RequestException:
            return 0
        if response.status_code == 201:
            accepted.append(response.json()["job_id"])
        else:
            assert response.status_code == 503, f"{response.status_code}: {response.text}"
        return response.status_code

    def all_succeeded(timeout: float) -> None:
        def done() -> bool:
            return all(api.job(job_id)["status"] == "succeeded" for job_id in accepted)

        wait_until(done, timeout=timeout, message=lambda: f"not all accepted jobs succeeded: {worker.output()[-3000:]}")

    def queued_within(seconds: float) -> None:
        """Once the sentinels agree, a new job is queued (not pending) within `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            response = api.post("/jobs", {"type": "echo", "payload": {}})
            if response.status_code == 201:
                accepted.append(response.json()["job_id"])
                if response.json()["status"] == "queued":
                    return
            assert time.monotonic() < deadline, f"no job queued within {seconds} s: {response.text}"
            time.sleep(0.2)

    try:
        wait_healthy(web, stack.base_url)
        ready = requests.get(f"{stack.base_url}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        for _ in range(10):
            assert submit() == 201
        all_succeeded(30)

        # 1. A commanded failover: the old primary stays up as a replica and answers writes with READONLY.
        old = agreed_primary(sentinel_set.sentinel_addresses)
        assert old is not None
        client = redis.Redis(*sentinel_set.sentinel_addresses[0])
        client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        client.close()
        for _ in range(20):
            submit()
            time.sleep(0.1)
        new, _seconds = wait_for_new_primary(sentinel_set.sentinel_addresses, old)
        queued_within(10)
        all_succeeded(60)

        # 2. The primary killed: connections to it are refused until the sentinels promote the replica.
        sentinel_set.servers[new[1]].popen.send_signal(signal.SIGKILL)
        for _ in range(20):
            submit()
            time.sleep(0.1)
        wait_for_new_primary(sentinel_set.sentinel_addresses, new)
        queued_within(10)
        all_succeeded(60)

        # The scheduler came through both failovers too: a delayed job is released and runs.
        delayed = api.post("/jobs", {"type": "echo", "payload": {}, "delay": 1})
        assert delayed.status_code == 201, delayed.text
        assert delayed.json()["status"] == "scheduled"
        accepted.append(delayed.json()["job_id"])
        all_succeeded(30)

        assert requests.get(f"{stack.base_url}/readyz", timeout=5).status_code == 200
        for process in processes:
            assert process.alive(), f"{process.name} exited:\n{process.output()[-3000:]}"
        # Every Redis user went through the sentinels: nothing ever listened at REDIS_URL's own address.
        assert len(accepted) >= 40
    finally:
        for process in processes:
            stop(process, signals=(signal.SIGTERM, signal.SIGTERM))
        api.session.close()
    assert API_KEY
