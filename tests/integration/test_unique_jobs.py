"""Unique jobs against the real server: racing submits make one job (SQLite or PostgreSQL, per DATABASE_URL)."""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .harness import API_KEY, Api

pytestmark = pytest.mark.integration

RACERS = 20


def test_twenty_racing_unique_submits_make_one_job(api: Api) -> None:
    key = f"race-{secrets.token_hex(4)}"
    start = threading.Barrier(RACERS)

    def submit(index: int) -> requests.Response:
        with requests.Session() as session:  # a connection of its own: the requests reach the server together
            start.wait()
            return session.post(
                api.url("/jobs"),
                json={"type": "sleep", "payload": {"seconds": 30}, "unique_key": key, "unique_for": 600},
                headers={"X-API-Key": API_KEY},
                timeout=30,
            )

    with ThreadPoolExecutor(RACERS) as pool:
        responses = list(pool.map(submit, range(RACERS)))

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * (RACERS - 1) + [201], [response.text for response in responses]
    ids = {response.json()["job_id"] for response in responses}
    assert len(ids) == 1
    (job_id,) = ids
    api.submitted.append(job_id)  # cancelled at teardown
    listed = api.get("/jobs", type="sleep", limit="500").json()["results"]
    assert [job["job_id"] for job in listed if job["unique_key"] == key] == [job_id]

    # Once that job has finished (here: cancelled), the key is free again: one more job, still one at a time.
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 202
    with ThreadPoolExecutor(RACERS) as pool:
        start.reset()
        again = list(pool.map(submit, range(RACERS)))
    assert sorted(response.status_code for response in again) == [200] * (RACERS - 1) + [201]
    new_ids = {response.json()["job_id"] for response in again}
    assert len(new_ids) == 1 and new_ids != ids
    api.submitted.extend(new_ids)
