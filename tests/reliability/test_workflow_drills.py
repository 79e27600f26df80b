"""Workflow drills: a worker killed between a parent's outcome and the release of its dependents, and a Redis
FLUSHALL in the middle of a workflow. Every node must end `succeeded`; no dependent runs twice."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.harness import Api, parse_time, wait_until

from .drills import Drill

pytestmark = pytest.mark.integration

CHAINS = 20


def chains_and_fan_in(*, step: dict[str, Any]) -> list[dict[str, Any]]:
    """CHAINS chains a -> b -> c, and one node after every c."""
    nodes = []
    for n in range(CHAINS):
        nodes.append({"name": f"a{n}", **step})
        nodes.append({"name": f"b{n}", **step, "after": [f"a{n}"]})
        nodes.append({"name": f"c{n}", **step, "after": [f"b{n}"]})
    nodes.append({"name": "done", "type": "gather", "after": [f"c{n}" for n in range(CHAINS)]})
    return nodes


def run_workflow(api: Api, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    response = api.post("/workflows", {"nodes": nodes})
    assert response.status_code == 201, response.text[:500]
    return response.json()


def check_order(jobs: dict[str, dict[str, Any]]) -> None:
    for name, job in jobs.items():
        for parent in job["after"]:
            assert parse_time(jobs[parent]["finished_at"]) <= parse_time(job["started_at"]), (parent, name)


def test_worker_killed_between_a_parent_outcome_and_the_release(drill: Drill) -> None:
    api = drill.web()
    created = run_workflow(api, chains_and_fan_in(step={"type": "echo"}))
    ids = {name: job["job_id"] for name, job in created["jobs"].items()}
    doomed = drill.worker(SENTINELFLOW_HANDLER_MODULES="tests.reliability.crash_before_release")

    wait_until(lambda: not doomed.alive(), timeout=30, message=lambda: "the doomed worker never reached a release")
    # Its outcomes are durable; the dependents it was about to release still wait.
    states = drill.jobs()
    done_roots = [n for n in range(CHAINS) if states[ids[f"a{n}"]][0] == "succeeded"]
    assert done_roots, "the worker died before any outcome was committed"
    assert all(states[ids[f"b{n}"]][0] == "waiting" for n in done_roots)

    sentinel = drill.sentinel(interval=1)
    drill.worker()
    drill.worker()
    outcomes = drill.wait_until_done(list(ids.values()), timeout=60)

    drill.report("worker-killed-before-release", list(ids.values()), outcomes)
    dependents = [job_id for name, job_id in ids.items() if not name.startswith("a")]
    assert {outcomes[job_id][1] for job_id in dependents} == {1}, "a dependent ran twice"
    body = api.get(f"/workflows/{created['workflow_id']}").json()
    assert body["status"] == "succeeded"
    check_order(body["jobs"])
    assert body["jobs"]["done"]["result"]["count"] == CHAINS
    assert sentinel.alive()


def test_flushall_in_the_middle_of_a_workflow(drill: Drill) -> None:
    api = drill.web()
    sentinel = drill.sentinel(interval=1)
    created = run_workflow(api, chains_and_fan_in(step={"type": "sleep", "payload": {"seconds": 0.2}}))
    ids = {name: job["job_id"] for name, job in created["jobs"].items()}
    drill.worker()

    def midway() -> bool:
        statuses = [status for status, _ in drill.jobs().values()]
        return statuses.count("succeeded") >= 5 and statuses.count("waiting") >= 5

    wait_until(midway, timeout=30, message=lambda: "the workflow never got midway")
    drill.redis.client().flushall()
    drill.worker()
    outcomes = drill.wait_until_done(list(ids.values()), timeout=90)

    drill.report("flushall-mid-workflow", list(ids.values()), outcomes)
    body = api.get(f"/workflows/{created['workflow_id']}").json()
    assert body["status"] == "succeeded"
    check_order(body["jobs"])
    assert sentinel.alive()
