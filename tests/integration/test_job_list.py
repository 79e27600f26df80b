"""GET /jobs over HTTP against the real server: order, filters, cursor pagination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from .harness import Api, parse_time

pytestmark = pytest.mark.integration


def _ids(page: dict) -> list[str]:
    return [job["job_id"] for job in page["results"]]


def test_list_is_newest_first_and_filters_work(api: Api) -> None:
    # The session's database is shared with the other tests: look only at what this test made, by time and id.
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    first = api.submit(type="echo", payload={"n": 1})
    second = api.submit(type="sleep", payload={"seconds": 0.1}, queue="low")
    third = api.submit(type="echo", payload={"n": 3}, queue="high")
    fourth = api.submit(type="echo", payload={"n": 4}, delay=3600)
    assert api.post(f"/jobs/{first['job_id']}/cancel").status_code == 202
    mine = [fourth["job_id"], third["job_id"], second["job_id"], first["job_id"]]  # newest first

    response = api.get("/jobs", created_after=since)
    assert response.status_code == 200, response.text
    page = response.json()
    assert set(page) >= {"next", "previous", "results"}
    listed = [job_id for job_id in _ids(page) if job_id in mine]
    assert listed == mine, page
    created = [parse_time(job["created_at"]) for job in page["results"]]
    assert created == sorted(created, reverse=True)
    assert {job["job_id"]: job["status"] for job in page["results"] if job["job_id"] in mine} == {
        first["job_id"]: "cancelled",
        second["job_id"]: "queued",
        third["job_id"]: "queued",
        fourth["job_id"]: "scheduled",
    }

    def listed_ids(**filters: str) -> list[str]:
        response = api.get("/jobs", created_after=since, limit="500", **filters)
        assert response.status_code == 200, f"{filters}: {response.text}"
        results = response.json()["results"]
        for name in ("status", "type", "queue"):
            if name in filters:
                assert all(job[name] == filters[name] for job in results), (filters, results)
        return [job_id for job_id in (job["job_id"] for job in results) if job_id in mine]

    assert listed_ids(status="cancelled") == [first["job_id"]]
    assert listed_ids(status="scheduled") == [fourth["job_id"]]
    assert listed_ids(status="queued") == [third["job_id"], second["job_id"]]
    assert listed_ids(type="sleep") == [second["job_id"]]
    assert listed_ids(type="echo") == [fourth["job_id"], third["job_id"], first["job_id"]]
    assert listed_ids(type="echo", status="queued") == [third["job_id"]]
    assert listed_ids(queue="high") == [third["job_id"]]
    assert listed_ids(queue="low", type="sleep") == [second["job_id"]]
    later = (parse_time(fourth["created_at"]) + timedelta(seconds=1)).isoformat()
    assert listed_ids(created_before=later) == mine
    assert api.get("/jobs", created_after=later).json()["results"] == []

    # Cursor pagination, two at a time: every job once, in order, with no overlap.
    walked: list[str] = []
    response = api.get("/jobs", created_after=since, limit="2")
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["results"]) <= 2
        walked += _ids(page)
        pages += 1
        if not page["next"] or pages > 50:
            break
        response = api.get(page["next"])
    assert [job_id for job_id in walked if job_id in mine] == mine
    assert len(walked) == len(set(walked))
    assert pages >= 2

    for bad in ({"status": "bogus"}, {"type": "nope"}, {"created_after": "yesterday"}, {"limit": "0"}):
        response = api.get("/jobs", **bad)
        assert response.status_code == 400, (bad, response.text)
        assert set(bad) & set(response.json()), (bad, response.json())
