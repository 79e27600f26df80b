"""GET /jobs/{id} and GET /jobs: lookup, cursor pagination and filters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import JobStatus
from tests.factories import make_jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_get_job_returns_it(anon, submit):
    job = submit({"type": "echo", "payload": {"x": 1}})

    response = anon.get(f"/jobs/{job['job_id']}")

    assert response.status_code == 200
    assert response.json() == job
    assert anon.get(f"/jobs/{job['job_id']}/").status_code == 200


@pytest.mark.parametrize("job_id", ["7b97c11a-024a-411e-b3f7-7e216534d7e4", "not-a-uuid"])
def test_get_unknown_job_is_404(anon, job_id):
    response = anon.get(f"/jobs/{job_id}")

    assert response.status_code == 404
    assert "detail" in response.json()


def test_unknown_path_is_json_404(anon):
    response = anon.get("/nothing-here")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_list_is_newest_first(anon):
    jobs = make_jobs(3)

    body = anon.get("/jobs").json()

    assert [row["job_id"] for row in body["results"]] == [str(job.job_id) for job in reversed(jobs)]
    assert body["previous"] is None and body["next"] is None


def test_pagination_visits_every_job_once_even_while_jobs_arrive(anon):
    # Same created_at for all: ordering must not depend on the timestamp being unique.
    stamp = timezone.now()
    jobs = make_jobs(23, created_at=stamp)
    seen: list[str] = []
    url = "/jobs?limit=5"
    pages = 0
    while url:
        body = anon.get(url).json()
        seen += [row["job_id"] for row in body["results"]]
        if pages == 1:
            make_jobs(4)  # newer jobs arrive mid-walk; they must not shift the walk
        url = body["next"]
        pages += 1

    assert len(seen) == len(set(seen)) == 23
    assert seen == [str(job.job_id) for job in reversed(jobs)]
    assert pages == 5


def test_limit_defaults_to_50_and_caps_at_500(anon):
    make_jobs(501)

    assert len(anon.get("/jobs").json()["results"]) == 50
    assert len(anon.get("/jobs?limit=1000").json()["results"]) == 500


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=-3", "cursor=garbage"])
def test_bad_limit_or_cursor_is_400(anon, query):
    response = anon.get(f"/jobs?{query}")

    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


def test_filters_by_status_type_and_queue(anon):
    make_jobs(2, status=JobStatus.FAILED)
    make_jobs(1, status=JobStatus.FAILED, type="sleep", queue="high")
    make_jobs(3, status=JobStatus.SUCCEEDED)

    def count(query: str) -> int:
        return len(anon.get(f"/jobs?{query}").json()["results"])

    assert count("status=failed") == 3
    assert count("status=failed&type=sleep") == 1
    assert count("queue=high") == 1
    assert count("status=succeeded&type=echo") == 3


def test_filters_by_creation_time(anon):
    now = timezone.now()
    old = make_jobs(1, created_at=now - timedelta(days=2))[0]
    new = make_jobs(1, created_at=now)[0]
    cutoff = (now - timedelta(days=1)).isoformat().replace("+00:00", "Z")

    after = anon.get("/jobs", {"created_after": cutoff}).json()["results"]
    before = anon.get("/jobs", {"created_before": cutoff}).json()["results"]

    assert [row["job_id"] for row in after] == [str(new.job_id)]
    assert [row["job_id"] for row in before] == [str(old.job_id)]


@pytest.mark.parametrize(
    "query", ["status=exploded", "type=nope", "queue=urgent", "created_after=yesterday", "created_before=2020-13-45"]
)
def test_bad_filter_is_400_naming_it(anon, query):
    response = anon.get(f"/jobs?{query}")

    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


def test_reads_can_require_a_key(anon, api, settings):
    settings.SENTINELFLOW_READS_REQUIRE_KEY = True

    assert anon.get("/jobs").status_code == 401
    assert api.get("/jobs").status_code == 200


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("created_before=0226-09-04T13:47:59-21:17", 200),  # ISO allows it; PostgreSQL's offsets stop at 16 h
        ("created_after=2026-01-01T00:00:00%2B23:59", 200),
        ("created_after=0001-01-01T00:00:00%2B05:00", 400),  # before year 1 once in UTC
    ],
)
def test_odd_but_valid_offsets_are_compared_in_utc(anon, query, status):
    make_jobs(1)

    response = anon.get(f"/jobs?{query}")

    assert response.status_code == status, response.content


def test_an_unknown_type_filter_holding_a_percent_sign_is_a_400_naming_it(api):
    response = api.get("/jobs", {"type": "100%s done %(x)s"})

    assert response.status_code == 400
    assert "100%s done %(x)s" in response.json()["type"][0]
