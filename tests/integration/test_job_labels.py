"""Tags, metadata and bulk actions against the real server and Redis (SQLite or PostgreSQL, per DATABASE_URL)."""

from __future__ import annotations

import secrets

import pytest

from .harness import Api

pytestmark = pytest.mark.integration


def test_a_batch_with_labels_is_listed_by_them_and_bulk_cancelled(api: Api) -> None:
    run = secrets.token_hex(4)  # the session's database is shared: this test's own tag
    items = [
        {
            "type": "echo",
            "payload": {"n": n},
            "delay": 3600,
            "tags": [run, f"n{n % 2}"],
            "metadata": {"region": "eu" if n < 3 else "us", "n": n},
        }
        for n in range(5)
    ]
    response = api.post("/jobs/batch", {"jobs": items})
    assert response.status_code == 201, response.text
    ids = [job["job_id"] for job in response.json()["jobs"]]
    api.submitted.extend(ids)
    assert [job["tags"] for job in response.json()["jobs"]] == [item["tags"] for item in items]

    def listed(**params: str) -> list[str]:
        answer = api.get("/jobs", tag=run, limit="500", **params)
        assert answer.status_code == 200, answer.text
        return [job["job_id"] for job in answer.json()["results"]]

    assert listed() == ids[::-1]
    assert listed(**{"metadata.region": "eu"}) == ids[2::-1]
    assert listed(**{"metadata.n": "4"}) == [ids[4]]
    assert listed(**{"payload.n": "1"}) == [ids[1]]
    assert api.get("/jobs", **{"payload.__class__": "x"}).status_code == 400

    dry = api.post("/jobs/bulk/cancel", {"filter": {"tag": run, "metadata.region": "eu"}, "dry_run": True})
    assert dry.json() == {"matched": 3, "changed": 0}
    done = api.post("/jobs/bulk/cancel", {"filter": {"tag": run, "metadata.region": "eu"}})
    assert done.status_code == 200, done.text
    assert done.json() == {"matched": 3, "changed": 3}
    assert {api.job(job_id)["status"] for job_id in ids[:3]} == {"cancelled"}
    assert {api.job(job_id)["status"] for job_id in ids[3:]} == {"scheduled"}

    again = api.post("/jobs/bulk/retry", {"filter": {"tag": [run, "n0"], "status": "cancelled"}})
    assert again.json() == {"matched": 2, "changed": 2}  # n = 0 and 2
    assert {api.job(job_id)["status"] for job_id in (ids[0], ids[2])} == {"queued"}  # no worker runs here
