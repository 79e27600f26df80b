"""Flow control with real worker processes and a real Redis: concurrency and rate limits set through
PATCH /types/{name}, paused queues and types, and a worker SIGKILLed while it holds a concurrency slot.

Overlap and spread are judged from the runs' own times (each job's started_at and finished_at, written by
the worker that ran it), never from how long the test took."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from .harness import API_KEY, Api, Workers, parse_time, wait_until

pytestmark = pytest.mark.integration


def patch(api: Api, name: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.patch(api.url(f"/types/{name}"), json=body, headers={"X-API-Key": API_KEY}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def limited(api: Api) -> Iterator[Any]:
    """PATCH a type's flow control; undone at the end (the stack is shared by the session's tests)."""
    changed: list[str] = []

    def limit(name: str, **body: Any) -> dict[str, Any]:
        changed.append(name)
        return patch(api, name, body)

    yield limit
    for name in changed:
        patch(api, name, {"max_concurrency": None, "rate": None, "paused": False})


def wait_all(api: Api, ids: list[str], *, timeout: float) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        jobs = [api.job(job_id) for job_id in ids]
        return jobs if all(job["status"] == "succeeded" for job in jobs) else None

    return wait_until(done, timeout=timeout, message=lambda: f"not all of {len(ids)} jobs succeeded")


def most_at_once(jobs: list[dict[str, Any]]) -> int:
    events = sorted(
        [(parse_time(job["started_at"]), 1) for job in jobs] + [(parse_time(job["finished_at"]), -1) for job in jobs],
        key=lambda event: (event[0], event[1]),  # an end and a start at the same instant do not overlap
    )
    running = peak = 0
    for _when, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_max_concurrency_2_across_two_workers_of_four_threads(api: Api, workers: Workers, limited):
    assert limited("sleep", max_concurrency=2)["max_concurrency"] == 2
    ids = [api.submit(type="sleep", payload={"seconds": 0.2})["job_id"] for _ in range(50)]
    workers.start(WORKER_CONCURRENCY="4", scheduler=True)
    workers.start(WORKER_CONCURRENCY="4", scheduler=True)

    jobs = wait_all(api, ids, timeout=120)

    assert most_at_once(jobs) <= 2
    assert all(job["attempts"] == 1 for job in jobs)  # a hold spends no attempt
    metrics = api.metrics()
    assert metrics.value("jobs_held_total", type="sleep", reason="concurrency") > 0


def test_rate_5_per_second_spreads_50_jobs_over_about_10_seconds(api: Api, workers: Workers, limited):
    limited("echo", rate="5/s")
    ids = [api.submit(type="echo", payload={"message": str(number)})["job_id"] for number in range(50)]
    workers.start(WORKER_CONCURRENCY="4", scheduler=True)
    workers.start(WORKER_CONCURRENCY="4", scheduler=True)

    jobs = wait_all(api, ids, timeout=120)

    starts = sorted(parse_time(job["started_at"]) for job in jobs)
    # GCRA with a burst of one: the 50th run starts 49 intervals of 0.2 s after the first at the earliest.
    assert (starts[-1] - starts[0]).total_seconds() >= 8
    assert all(job["attempts"] == 1 for job in jobs)


def test_a_paused_queue_holds_its_jobs_and_resume_runs_them_all(api: Api, workers: Workers):
    assert api.post("/queues/low/pause").json()["paused"] is True
    try:
        ids = [api.submit(type="echo", payload={"message": "later"}, queue="low")["job_id"] for _ in range(10)]
        workers.start(WORKER_CONCURRENCY="2", scheduler=True)
        workers.start(scheduler=True)
        wait_until(
            lambda: len(api.get("/queues").json()) and _queue(api, "low")["workers"] >= 2,
            timeout=30,
            message=lambda: str(api.get("/queues").json()),
        )
        time.sleep(4)  # the workers are up and listening: a paused queue gives them nothing
        assert {api.job(job_id)["status"] for job_id in ids} == {"queued"}
        low = _queue(api, "low")
        assert low["paused"] is True and low["depth"] == 10
        assert api.metrics().value("jobs_queue_paused", queue="low") == 1
    finally:
        assert api.post("/queues/low/resume").json()["paused"] is False
    jobs = wait_all(api, ids, timeout=60)
    assert all(job["attempts"] == 1 for job in jobs)
    assert api.metrics().value("jobs_queue_paused", queue="low") == 0


def test_a_paused_type_waits_and_resumes(api: Api, workers: Workers, limited):
    assert limited("echo", paused=True)["paused"] is True
    ids = [api.submit(type="echo", payload={"message": "later"})["job_id"] for _ in range(5)]
    workers.start(scheduler=True)
    wait_until(
        lambda: next(t for t in api.get("/types").json() if t["name"] == "echo")["held"] >= 1,
        timeout=30,
        message=lambda: str(api.get("/types").json()),
    )
    time.sleep(3)
    jobs = [api.job(job_id) for job_id in ids]
    assert {job["status"] for job in jobs} == {"queued"} and {job["attempts"] for job in jobs} == {0}
    assert api.metrics().value("jobs_type_paused", type="echo") == 1
    patch(api, "echo", {"paused": False})
    wait_all(api, ids, timeout=60)


def test_a_worker_killed_holding_a_slot_does_not_block_the_type(api: Api, workers: Workers, limited):
    limited("sleep", max_concurrency=1)
    doomed = workers.start()
    long = api.submit(type="sleep", payload={"seconds": 120})["job_id"]
    api.wait_for_job(long, lambda job: job["status"] == "started", timeout=30, what="started")
    survivor = workers.start(scheduler=True)  # runs RQ's scheduler: held jobs come back through it
    wait_until(lambda: "Listening on" in survivor.output(), timeout=30, message=survivor.output)
    short = api.submit(type="sleep", payload={"seconds": 0.1})["job_id"]
    time.sleep(2)
    assert api.job(short)["status"] == "queued"  # the slot is taken: it waits
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.popen.wait(timeout=10)
    # The dead run's lease lapses within 10 s; the next ask for the slot drops it.
    assert api.wait_for_status(short, "succeeded", timeout=60)["attempts"] == 1


def _queue(api: Api, name: str) -> dict[str, Any]:
    return next(queue for queue in api.get("/queues").json() if queue["name"] == name)
