"""Issue 18 with real processes: signed callbacks delivered by `manage.py rqworker` to a real receiver,
failure groups over HTTP, and retention by `manage.py prune_jobs` and `manage.py sentinel --once`."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from sentinelflow_site.processes import free_port
from tests.callback_receiver import Receiver, verify

from .harness import REPO_ROOT, Api, Stack, Workers, spawn, stop, wait_healthy

pytestmark = pytest.mark.integration


def manage(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=stack.env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def new_key(stack: Stack) -> tuple[str, str]:
    """A key made by `manage.py create_api_key`: (the key from stdout, its signing secret from stderr)."""
    result = manage(stack, "create_api_key", f"it-{secrets.token_hex(4)}")
    secret = result.stderr.rsplit("(shown once): ", 1)[1].split()[0]
    return result.stdout.strip(), secret


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def private_api(stack: Stack) -> Iterator[Api]:
    """A second web process of the stack started with the explicit setting that lets callback URLs name
    127.0.0.1, where the test's receiver listens (the session's web process refuses them: a 400)."""
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "sentinelflow_site.wsgi:application", "-b", f"127.0.0.1:{port}"]
    args += ["-w", "1", "--graceful-timeout", "5", "--no-control-socket"]
    web = spawn("gunicorn-private", args, env=stack.env(WEBHOOK_ALLOW_PRIVATE="1"), log_dir=stack.log_dir)
    try:
        wait_healthy(web, f"http://127.0.0.1:{port}")
        client = Api(f"http://127.0.0.1:{port}")
        yield client
        client.session.close()
    finally:
        stop(web)


def test_callbacks_are_signed_delivered_and_verified_by_a_real_receiver(
    api: Api, private_api: Api, stack: Stack, workers: Workers, receiver: Receiver
) -> None:
    key, secret = new_key(stack)
    jobs = []
    for body in ({"type": "echo", "payload": {"n": 1}}, {"type": "fail", "max_retries": 0}):
        response = private_api.post("/jobs", {**body, "callback_url": receiver.url}, key=key)
        assert response.status_code == 201, response.text
        jobs.append(response.json()["job_id"])
    api.submitted.extend(jobs)

    # The explicit setting that lets this worker reach the receiver on 127.0.0.1.
    workers.run_burst(WEBHOOK_ALLOW_PRIVATE="1")

    assert sorted(json.loads(d.body)["job_id"] for d in receiver.deliveries) == sorted(jobs)
    for delivery in receiver.deliveries:
        header = delivery.headers["X-Sentinelflow-Signature"]
        assert verify(secret, header, delivery.body)
        assert not verify("whsec_" + "x" * 43, header, delivery.body)
    statuses = {json.loads(d.body)["job_id"]: json.loads(d.body)["status"] for d in receiver.deliveries}
    assert statuses == {jobs[0]: "succeeded", jobs[1]: "failed"}
    for job_id in jobs:
        job = api.get(f"/jobs/{job_id}", key=key).json()
        assert (job["callback_status"], job["callback_attempts"]) == ("delivered", 1)


def test_a_worker_without_the_setting_refuses_a_private_target(
    api: Api, private_api: Api, stack: Stack, workers: Workers, receiver: Receiver
) -> None:
    key, _secret = new_key(stack)
    response = private_api.post("/jobs", {"type": "echo", "callback_url": receiver.url}, key=key)
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    api.submitted.append(job_id)

    workers.run_burst()

    assert receiver.deliveries == []
    job = api.get(f"/jobs/{job_id}", key=key).json()
    assert (job["status"], job["callback_status"]) == ("succeeded", "failed")


def test_submit_refuses_a_private_callback_url(api: Api, stack: Stack) -> None:
    key, _secret = new_key(stack)
    for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "gopher://example.com/"):
        response = api.post("/jobs", {"type": "echo", "callback_url": url}, key=key)
        assert response.status_code == 400 and "callback_url" in response.json(), response.text
    refused = api.post("/jobs", {"type": "echo", "callback_url": "https://example.com/hook"})  # the bootstrap key
    assert refused.status_code == 400 and "stored API key" in refused.json()["detail"]


def test_failures_are_grouped_over_http(api: Api, workers: Workers) -> None:
    token = secrets.token_hex(4)
    for number in (17, 4711, 99):
        api.submit(type="fail", max_retries=0, payload={"message": f"upstream {token}x timed out on order {number}"})
    api.submit(type="fail", max_retries=0, payload={"message": f"another cause {token}x"})

    workers.run_burst()

    groups = [g for g in api.get("/failures", type="fail").json() if token in g["sample_error"]]
    assert sorted(g["count"] for g in groups) == [1, 3]
    assert api.get("/failures", key=None).status_code == 401


def test_prune_jobs_and_the_sentinel_delete_finished_jobs_past_their_age(
    api: Api, stack: Stack, workers: Workers
) -> None:
    first = [api.submit(type="sleep", payload={"seconds": 0})["job_id"] for _ in range(3)]
    waiting = api.submit(type="sleep", payload={"seconds": 0}, delay=3600)["job_id"]
    workers.run_burst()
    before = api.metrics().value("jobs_pruned_total", type="sleep", status="succeeded")
    time.sleep(1.5)
    # Finished sleep jobs are kept one second (0.0000116 days) by this setting.
    age = {"RETENTION_BY_TYPE": "sleep=0.0000116"}

    dry = manage(stack, "prune_jobs", "--dry-run", **age)
    assert "would delete" in dry.stdout and "succeeded:" in dry.stdout, dry.stdout
    assert all(api.get(f"/jobs/{job_id}").status_code == 200 for job_id in first)

    done = manage(stack, "prune_jobs", "--batch-size", "2", **age)
    assert "deleted" in done.stdout, done.stdout
    assert [api.get(f"/jobs/{job_id}").status_code for job_id in first] == [404, 404, 404]
    assert api.get(f"/jobs/{waiting}").status_code == 200  # unfinished: kept, however short its type's age

    second = [api.submit(type="sleep", payload={"seconds": 0})["job_id"] for _ in range(2)]
    workers.run_burst()
    time.sleep(1.5)
    sentinel = manage(stack, "sentinel", "--once", **age)
    assert "pruned" in sentinel.stdout, sentinel.stdout
    assert [api.get(f"/jobs/{job_id}").status_code for job_id in second] == [404, 404]
    assert api.metrics().value("jobs_pruned_total", type="sleep", status="succeeded") >= before + 5
