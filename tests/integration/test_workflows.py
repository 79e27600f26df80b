"""Workflows over HTTP, run by real `manage.py rqworker` processes on a real Redis and database."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from .harness import Api, Workers, parse_time, wait_until

pytestmark = pytest.mark.integration


def submit_workflow(api: Api, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    response = api.post("/workflows", {"nodes": nodes})
    assert response.status_code == 201, response.text[:1000]
    body = response.json()
    api.submitted.extend(job["job_id"] for job in body["jobs"].values())
    return body


def finished(api: Api, workflow_id: str, *, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = api.get(f"/workflows/{workflow_id}").json()
        return body if body["status"] != "running" else None

    return wait_until(done, timeout=timeout, message=lambda: f"workflow {workflow_id} never finished")


def test_a_chain_of_three_runs_in_order_with_results_passed_on(api: Api, workers: Workers) -> None:
    created = submit_workflow(
        api,
        [
            {"name": "fetch", "type": "echo", "payload": {"rows": [1, 2, 3]}},
            {"name": "transform", "type": "gather", "after": ["fetch"]},
            {"name": "notify", "type": "gather", "after": ["transform"]},
        ],
    )
    workers.start()
    workers.start()

    body = finished(api, created["workflow_id"])

    assert body["status"] == "succeeded", body
    jobs = body["jobs"]
    assert jobs["transform"]["result"]["parents"] == {"fetch": {"rows": [1, 2, 3]}}
    assert jobs["notify"]["result"]["parents"]["transform"]["parents"] == {"fetch": {"rows": [1, 2, 3]}}
    order = [jobs[name] for name in ("fetch", "transform", "notify")]
    for parent, child in itertools.pairwise(order):
        assert parse_time(parent["finished_at"]) <= parse_time(child["started_at"]), (parent, child)
    assert all(job["attempts"] == 1 for job in jobs.values())


def test_a_fan_out_of_100_and_a_fan_in_that_sees_every_result(api: Api, workers: Workers) -> None:
    before = api.metrics()
    nodes = [{"name": f"image-{n}", "type": "echo", "payload": {"n": n}} for n in range(100)]
    nodes.append({"name": "album", "type": "gather", "after": [f"image-{n}" for n in range(100)], "run_if": "finished"})
    created = submit_workflow(api, nodes)
    assert created["counts"] == {"queued": 100, "waiting": 1}
    workers.start()
    workers.start()

    body = finished(api, created["workflow_id"])

    album = body["jobs"]["album"]
    assert album["status"] == "succeeded"
    assert album["result"]["parents"] == {f"image-{n}": {"n": n} for n in range(100)}
    assert max(parse_time(body["jobs"][f"image-{n}"]["finished_at"]) for n in range(100)) <= parse_time(
        album["started_at"]
    )
    after = api.metrics()
    assert after.value("workflows_started_total") == before.value("workflows_started_total") + 1
    assert after.value("workflows_finished_total", outcome="succeeded") == (
        before.value("workflows_finished_total", outcome="succeeded") + 1
    )


def test_a_failed_parent_cancels_its_dependents_and_allow_failure_lets_one_run(api: Api, workers: Workers) -> None:
    created = submit_workflow(
        api,
        [
            {"name": "download", "type": "fail", "max_retries": 0},
            {"name": "resize", "type": "echo", "after": ["download"]},
            {"name": "publish", "type": "echo", "after": ["resize"]},
            {"name": "report", "type": "gather", "after": ["download"], "run_if": "finished"},
        ],
    )
    plain = api.submit(type="echo", depends_on=[created["jobs"]["download"]["job_id"]])
    tolerant = api.submit(type="echo", depends_on=[created["jobs"]["download"]["job_id"]], allow_failure=True)
    workers.start()

    body = finished(api, created["workflow_id"])

    statuses = {name: job["status"] for name, job in body["jobs"].items()}
    assert statuses == {"download": "failed", "resize": "cancelled", "publish": "cancelled", "report": "succeeded"}
    assert "its parent 'download' failed" in body["jobs"]["resize"]["error"]
    assert body["jobs"]["resize"]["attempts"] == 0 and body["jobs"]["publish"]["attempts"] == 0
    assert body["status"] == "failed"
    assert api.wait_for_status(plain["job_id"], "cancelled")["attempts"] == 0
    assert api.wait_for_status(tolerant["job_id"], "succeeded")["attempts"] == 1


def test_wait_answers_when_the_job_finishes(api: Api, workers: Workers) -> None:
    workers.start()
    job = api.submit(type="sleep", payload={"seconds": 1.5})

    response = api.get(f"/jobs/{job['job_id']}", wait="20")
    answered_at = datetime.now(UTC)  # this host's clock, as the server's (same machine)

    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "succeeded"
    lag = (answered_at - parse_time(body["finished_at"])).total_seconds()
    # It answered on the finish, not after the 20 s wait (the server polls every 50 ms; the bench measures lag).
    assert 0 <= lag < 5, lag
    assert body["progress"] == 1.0
    print(f"?wait= answered {lag * 1000:.0f} ms after finished_at")


def test_wait_on_a_workflow_and_its_progress(api: Api, workers: Workers) -> None:
    created = submit_workflow(
        api,
        [
            {"name": "a", "type": "sleep", "payload": {"seconds": 0.5}},
            {"name": "b", "type": "echo", "after": ["a"]},
        ],
    )
    assert created["progress"] == 0
    workers.start()
    started = time.monotonic()

    body = api.get(f"/workflows/{created['workflow_id']}", wait="30").json()

    assert body["status"] == "succeeded", body
    assert body["progress"] == 1.0
    assert time.monotonic() - started < 30
