"""Observability through HTTP against real processes: cluster-wide job metrics and the readiness probe.

Two gunicorn servers (each with two workers and its own prometheus_client multiprocess
directory, as scripts/run.sh runs them) and two `manage.py rqworker` processes share one
Redis and one database: every server's /metrics must show the same cluster-wide job totals,
django-prometheus' request metrics must be summed over the gunicorn workers of a server, and
a restarted server must show the totals it showed before. /readyz must answer within 2 s,
503 while its Redis is stopped or frozen (SIGSTOP) and 200 again once Redis is back.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from sentinelflow_site.processes import free_port, redis_server_command

from .harness import (
    TEST_LOGS,
    Api,
    Metrics,
    Process,
    Stack,
    Workers,
    spawn,
    stop,
    wait_healthy,
    wait_redis,
    wait_until,
)

pytestmark = pytest.mark.integration

JOBS = 40
JOB_TYPE = "echo"
JOB_QUEUE = "default"
READYZ_LIMIT = 2.0
# The method-labelled request counter of django-prometheus (its multiprocess-safe Counter).
REQUESTS_BY_METHOD = "django_http_requests_total_by_method_total"
ACCESS_LOG_FORMAT = '%(p)s "%(r)s" %(s)s'  # %(p)s is the pid of the gunicorn worker that served the request


# --------------------------------------------------------------------------- processes of these tests


def remember_log(node: pytest.Item, process: Process) -> None:
    """Attach `process`'s output to the report if the test fails (see conftest.pytest_runtest_makereport)."""
    logs = node.stash.setdefault(TEST_LOGS, [])
    if (process.name, process.log) not in logs:  # a restarted process appends to the same log
        logs.append((process.name, process.log))


@dataclass
class WebServer:
    """A gunicorn started as scripts/run.sh starts it: gunicorn.conf.py, two workers, a multiprocess dir."""

    name: str
    port: int
    multiproc_dir: Path
    env: dict[str, str]
    log_dir: Path
    process: Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Process:
        assert self.process is None or not self.process.alive(), f"{self.name} already runs"
        # As scripts/run.sh does: an empty multiprocess directory for each start of the server.
        shutil.rmtree(self.multiproc_dir, ignore_errors=True)
        self.multiproc_dir.mkdir(parents=True)
        args = [sys.executable, "-m", "gunicorn", "-c", "sentinelflow_site/gunicorn.conf.py"]
        args += ["sentinelflow_site.wsgi:application", "--graceful-timeout", "5", "--no-control-socket"]
        args += ["--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT]
        process = spawn(self.name, args, env=self.env, log_dir=self.log_dir)
        self.process = process
        wait_healthy(process, self.base_url)
        return process

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


@pytest.fixture
def web_servers() -> Iterator[list[WebServer]]:
    """Servers a test creates (with `new_server`); each one stopped by its pid at teardown."""
    servers: list[WebServer] = []
    yield servers
    for server in servers:
        server.stop()


def new_server(
    servers: list[WebServer], stack: Stack, node: pytest.Item, tmp_path: Path, name: str, **env: str
) -> WebServer:
    port = free_port()
    multiproc_dir = tmp_path / f"prometheus-{name}"
    server_env = stack.env(
        BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2", PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir), **env
    )
    server = WebServer(name=name, port=port, multiproc_dir=multiproc_dir, env=server_env, log_dir=stack.log_dir)
    servers.append(server)
    server.start()
    remember_log(node, server.process)
    return server


class RedisServer:
    """A private redis-server on a fixed port, which a test stops, restarts, freezes and thaws."""

    def __init__(self, name: str, data_dir: Path, log_dir: Path, node: pytest.Item) -> None:
        self.name = name
        self.port = free_port()
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.node = node
        self.process: Process | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = redis_server_command(self.port, "--daemonize", "no", data_dir=self.data_dir)
        process = spawn(self.name, args, env=dict(os.environ), log_dir=self.log_dir)
        self.process = process
        remember_log(self.node, process)
        wait_redis(process, self.port)

    def stop(self) -> None:
        """SIGTERM by pid and wait for it to exit (thawing it first if frozen)."""
        if self.process is None:
            return
        self.thaw()
        stop(self.process)
        assert not self.process.alive()

    def freeze(self) -> None:
        assert self.process is not None and self.process.alive()
        self.process.popen.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen and self.process is not None and self.process.alive():
            self.process.popen.send_signal(signal.SIGCONT)
        self.frozen = False


@pytest.fixture
def private_redis(tmp_path: Path, stack: Stack, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A redis-server of this test alone (not the session's), stopped by its pid at teardown."""
    data_dir = tmp_path / "private-redis"
    data_dir.mkdir()
    server = RedisServer(f"redis-server-{request.node.name[:40]}", data_dir, stack.log_dir, request.node)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- helpers


JOB_METRICS = [
    ("jobs_submitted_total", {"type": JOB_TYPE}),
    ("jobs_enqueued_total", {"type": JOB_TYPE, "queue": JOB_QUEUE}),
    ("jobs_started_total", {"type": JOB_TYPE}),
    ("jobs_succeeded_total", {"type": JOB_TYPE}),
    ("job_duration_seconds_count", {"type": JOB_TYPE}),
    ("job_wait_seconds_count", {"type": JOB_TYPE}),
]


def job_samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The job metrics (ours, kept in Redis) of one scrape; not django-prometheus' own."""
    return {key: value for key, value in metrics.samples.items() if re.match(r"jobs?_", key[0])}


def deltas(before: Metrics, after: Metrics) -> dict[str, float]:
    return {name: after.value(name, **labels) - before.value(name, **labels) for name, labels in JOB_METRICS}


def readyz(base_url: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.get(f"{base_url}/readyz", timeout=10)
    return response, time.monotonic() - started


def served_by(log: str, method: str) -> set[str]:
    """Pids of the gunicorn workers that served `method` requests, from the access log."""
    return set(re.findall(rf'^<(\d+)> "{method} ', log, flags=re.MULTILINE))


# --------------------------------------------------------------------------- tests


def test_two_web_servers_and_two_workers_agree_on_cluster_wide_totals(
    stack: Stack,
    workers: Workers,
    web_servers: list[WebServer],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    # The session's redis-server, in a logical database no other test uses: no job left over by
    # another test can run here and move our totals (deltas are compared all the same).
    redis_url = re.sub(r"/\d+$", "/9", stack.redis_url)
    assert redis_url != stack.redis_url, stack.redis_url
    server_a = new_server(web_servers, stack, request.node, tmp_path, "gunicorn-a", REDIS_URL=redis_url)
    server_b = new_server(web_servers, stack, request.node, tmp_path, "gunicorn-b", REDIS_URL=redis_url)
    api_a, api_b = Api(server_a.base_url), Api(server_b.base_url)
    apis = [api_a, api_b]
    for api in apis:
        # A new connection per request: a kept-alive one stays with the gthread worker that accepted it,
        # and the requests must reach both workers of a server.
        api.session.headers["Connection"] = "close"
    try:
        for _ in range(2):
            worker = workers.start(REDIS_URL=redis_url)
            assert worker.alive(), worker.output()
        wait_until(
            lambda: all(api.metrics().value("jobs_workers") >= 2 for api in apis),
            timeout=30,
            message=lambda: f"jobs_workers: {[api.metrics().value('jobs_workers') for api in apis]}",
        )

        before = {api.base_url: api.metrics() for api in apis}
        posts_before_a = before[api_a.base_url].value(REQUESTS_BY_METHOD, method="POST")

        job_ids = []
        for index in range(JOBS):
            api = apis[index % 2]
            job = api.submit(type=JOB_TYPE, payload={"index": index})
            assert job["queue"] == JOB_QUEUE, job
            job_ids.append(job["job_id"])
        posts_to_a = (JOBS + 1) // 2

        unfinished = set(job_ids)
        last_seen: dict[str, dict[str, Any]] = {}

        def all_succeeded() -> bool:
            for number, job_id in enumerate(sorted(unfinished)):
                job = apis[number % 2].job(job_id)
                last_seen[job_id] = job
                assert job["status"] in {"queued", "started", "succeeded"}, job
                if job["status"] == "succeeded":
                    unfinished.discard(job_id)
            return not unfinished

        wait_until(
            all_succeeded,
            timeout=60,
            message=lambda: f"{len(unfinished)} jobs not succeeded: {[last_seen.get(i) for i in unfinished][:3]}",
        )
        assert all(last_seen[job_id]["attempts"] == 1 for job_id in job_ids)

        # A worker may count a success a moment after the row says succeeded: wait for the totals, then
        # compare exactly (more would be double counting).
        expected = {name: JOBS for name, _ in JOB_METRICS}
        for api in apis:
            wait_until(
                lambda api=api: deltas(before[api.base_url], api.metrics()) == expected,
                timeout=10,
                message=lambda api=api: f"{api.base_url}: deltas {deltas(before[api.base_url], api.metrics())}",
            )
        scrapes = {api.base_url: api.metrics() for api in apis}
        for api in apis:
            assert deltas(before[api.base_url], scrapes[api.base_url]) == expected, api.base_url
            assert scrapes[api.base_url].value("jobs_workers") >= 2
            assert scrapes[api.base_url].value("jobs_failed_total", type=JOB_TYPE) == before[api.base_url].value(
                "jobs_failed_total", type=JOB_TYPE
            )
        # Cluster-wide: both replicas show the very same job metrics, series for series.
        assert job_samples(scrapes[server_a.base_url]) == job_samples(scrapes[server_b.base_url])

        # django-prometheus' request metrics are summed over server A's two gunicorn workers: every
        # scrape, whichever worker answers it, counts all the POSTs A served. A per-process registry
        # would show only the POSTs of the worker that answered the scrape.
        pids = served_by(server_a.process.output(), "POST")
        assert len(pids) == 2, f"POSTs to {server_a.name} were not spread over its 2 workers: {pids}"
        log_offset = len(server_a.process.output())

        def scraped_by_both_workers() -> bool:
            posts = api_a.metrics().value(REQUESTS_BY_METHOD, method="POST")
            assert posts - posts_before_a >= posts_to_a, (posts_before_a, posts, posts_to_a)
            return len(served_by(server_a.process.output()[log_offset:], "GET /metrics")) == 2

        wait_until(
            scraped_by_both_workers,
            timeout=10,
            message=lambda: f"/metrics of {server_a.name} never answered by both workers",
        )

        # A restart of a replica resets nothing: its job metrics come back as they were.
        before_restart = job_samples(api_a.metrics())
        server_a.stop()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server_a.base_url}/healthz", timeout=2)
        server_a.start()
        remember_log(request.node, server_a.process)
        after_restart = job_samples(api_a.metrics())
        assert after_restart == before_restart
        assert job_samples(api_b.metrics()) == before_restart
        assert deltas(before[api_a.base_url], Metrics(after_restart)) == expected
    finally:
        for api in apis:
            api.session.close()


def test_readyz_answers_503_within_2s_when_redis_is_stopped_and_200_when_back(
    stack: Stack,
    private_redis: RedisServer,
    web_servers: list[WebServer],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    server = new_server(web_servers, stack, request.node, tmp_path, "gunicorn-readyz", REDIS_URL=private_redis.url)

    response, elapsed = readyz(server.base_url)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok", body
    assert body["checks"]["redis"]["status"] == "ok", body
    assert body["checks"]["database"]["status"] == "ok", body
    assert "workers" in body and body["workers"] == 0, body  # no worker on this private Redis
    assert elapsed < READYZ_LIMIT, elapsed

    private_redis.stop()

    for _ in range(3):  # every answer, not only the first, comes in time
        response, elapsed = readyz(server.base_url)
        assert elapsed < READYZ_LIMIT, f"/readyz took {elapsed:.2f}s with Redis stopped"
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] != "ok", body
        assert body["checks"]["redis"]["status"] == "error", body
        assert body["checks"]["redis"].get("error"), body
        assert body["checks"]["database"]["status"] == "ok", body
        assert "workers" in body, body
    assert requests.get(f"{server.base_url}/healthz", timeout=5).status_code == 200  # liveness is not readiness

    private_redis.start()

    def ready_again() -> dict[str, Any] | None:
        response, elapsed = readyz(server.base_url)
        assert elapsed < READYZ_LIMIT, elapsed
        return response.json() if response.status_code == 200 else None

    body = wait_until(ready_again, timeout=15, message=lambda: f"/readyz still {readyz(server.base_url)[0].text}")
    assert body["checks"]["redis"]["status"] == "ok" and body["checks"]["database"]["status"] == "ok", body
    assert "workers" in body, body


def test_readyz_does_not_hang_on_a_hung_redis(
    stack: Stack,
    private_redis: RedisServer,
    web_servers: list[WebServer],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    server = new_server(web_servers, stack, request.node, tmp_path, "gunicorn-readyz-hung", REDIS_URL=private_redis.url)

    response, _ = readyz(server.base_url)
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["redis"]["status"] == "ok", response.text

    private_redis.freeze()
    try:
        for _ in range(3):  # a frozen Redis accepts connections and never answers: each probe must time out
            response, elapsed = readyz(server.base_url)
            assert elapsed < READYZ_LIMIT, f"/readyz took {elapsed:.2f}s with Redis frozen"
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["checks"]["redis"]["status"] == "error", body
            assert body["checks"]["database"]["status"] == "ok", body
            assert "workers" in body, body
    finally:
        private_redis.thaw()

    def ready_again() -> bool:
        response, elapsed = readyz(server.base_url)
        assert elapsed < READYZ_LIMIT, elapsed
        return response.status_code == 200

    wait_until(ready_again, timeout=15, message=lambda: f"/readyz still {readyz(server.base_url)[0].text}")
