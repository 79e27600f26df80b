"""Tags and metadata on submit, and the list's tag, metadata and payload filters (and their refusals)."""

from __future__ import annotations

import pytest
from django.db import connection

from jobs.models import Job
from tests.factories import make_job

pytestmark = pytest.mark.django_db(transaction=True)


def listed(api, query: str) -> list[str]:
    response = api.get(f"/jobs?{query}")
    assert response.status_code == 200, response.content
    return [job["job_id"] for job in response.json()["results"]]


def test_a_submit_stores_tags_and_metadata(api):
    response = api.post(
        "/jobs",
        {"type": "echo", "tags": ["urgent", "billing", "urgent"], "metadata": {"region": "eu", "n": 3, "vip": True}},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["tags"] == ["urgent", "billing"]
    assert body["metadata"] == {"region": "eu", "n": 3, "vip": True}
    assert Job.objects.get().tags == ["urgent", "billing"]


def test_a_batch_stores_each_items_labels(api):
    response = api.post(
        "/jobs/batch",
        {"jobs": [{"type": "echo", "tags": ["a"]}, {"type": "echo", "metadata": {"k": "v"}}, {"type": "echo"}]},
        format="json",
    )

    assert response.status_code == 201
    assert [(job.tags, job.metadata) for job in Job.objects.order_by("id")] == [(["a"], {}), ([], {"k": "v"}), ([], {})]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tags": "urgent"}, "tags"),
        ({"tags": [""]}, "tags"),
        ({"tags": ["x" * 65]}, "tags"),
        ({"tags": [5]}, "tags"),
        ({"tags": [" padded"]}, "tags"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"metadata": []}, "metadata"),
        ({"metadata": {"a": {"b": 1}}}, "metadata"),
        ({"metadata": {"a": [1]}}, "metadata"),
        ({"metadata": {"a": None}}, "metadata"),
        ({"metadata": {"a.b": "x"}}, "metadata"),
        ({"metadata": {"__class__": "x"}}, "metadata"),
        ({"metadata": {"a__b": "x"}}, "metadata"),
        ({"metadata": {"a": "x" * 257}}, "metadata"),
        ({"metadata": {f"k{i}": i for i in range(21)}}, "metadata"),
    ],
)
def test_bad_tags_and_metadata_are_400_naming_the_field(api, body, field):
    response = api.post("/jobs", {"type": "echo", **body}, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert Job.objects.count() == 0


def test_the_list_filters_by_every_tag_given(api):
    both = make_job(tags=["a", "b"])
    only_a = make_job(tags=["a"])
    make_job(tags=["c"])

    assert listed(api, "tag=a") == [str(only_a.job_id), str(both.job_id)]
    assert listed(api, "tag=a&tag=b") == [str(both.job_id)]
    assert listed(api, "tag=zzz") == []


def test_the_list_filters_by_metadata_value_of_any_json_kind(api):
    eu = make_job(metadata={"region": "eu", "n": 42, "vip": True})
    us = make_job(metadata={"region": "us", "n": "42", "vip": False})

    assert listed(api, "metadata.region=eu") == [str(eu.job_id)]
    assert listed(api, "metadata.n=42") == [str(us.job_id), str(eu.job_id)]  # the number and the string
    assert listed(api, "metadata.vip=true") == [str(eu.job_id)]
    assert listed(api, "metadata.region=eu&metadata.vip=false") == []


def test_the_list_filters_by_payload_field(api):
    mine = make_job(payload={"customer_id": 42, "n": 1})
    make_job(payload={"customer_id": 43})
    make_job(payload={"customer": {"customer_id": 42}})  # nested: not the top-level field

    assert listed(api, "payload.customer_id=42") == [str(mine.job_id)]
    assert listed(api, "payload.customer_id=42&tag=a") == []


def test_label_filters_combine_with_the_others(api):
    failed = make_job(status="failed", tags=["a"])
    make_job(status="queued", tags=["a"])

    assert listed(api, "tag=a&status=failed") == [str(failed.job_id)]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("payload.__class__=x", "payload.__class__"),
        ("payload.__dict__=x", "payload.__dict__"),
        ("metadata.a__contains=x", "metadata.a__contains"),
        ("metadata.a.b=x", "metadata.a.b"),
        ("metadata.=x", "metadata."),
        ("metadata.1abc=x", "metadata.1abc"),
        ("payload.x%27%20OR%201=1--=x", "payload.x' OR 1"),
        ("metadata.region%3B%20DROP%20TABLE%20jobs_job=x", "metadata.region; DROP TABLE jobs_job"),
        ("metadata.region=" + "x" * 257, "metadata.region"),
        ("tag=" + "x" * 257, "tag"),
        ("tag=a%00b", "tag"),
        ("&".join(f"tag=t{i}" for i in range(11)), "tag"),
    ],
)
def test_filter_injection_attempts_are_400(api, query, param):
    make_job(payload={"x": 1}, metadata={"region": "eu"}, tags=["a"])

    response = api.get(f"/jobs?{query}")

    assert response.status_code == 400, response.content
    assert any(name.startswith(param[:20]) for name in response.json()), response.json()
    assert Job.objects.count() == 1


def test_a_very_long_filter_name_is_400_with_the_name_cut(api):
    response = api.get("/jobs?metadata." + "a" * 5000 + "=x")

    assert response.status_code == 400
    assert all(len(name) <= 100 for name in response.json())


def test_an_empty_label_value_is_no_filter(api):
    job = make_job(tags=["a"])

    assert listed(api, "tag=&metadata.region=") == [str(job.job_id)]


def test_the_admin_searches_by_tag_metadata_and_payload(client):
    from tests.factories import make_user

    client.force_login(make_user("viewer", "view_job"))
    hit = make_job(tags=["urgent"], metadata={"region": "eu"}, payload={"customer_id": 42})
    miss = make_job(tags=["urgent"], metadata={"region": "us"}, payload={"customer_id": 42})

    page = client.get("/admin/jobs/job/", {"q": "tag:urgent metadata.region:eu payload.customer_id:42"})

    assert page.status_code == 200
    shown = [job.pk for job in page.context["cl"].result_list]
    assert shown == [hit.pk]
    assert miss.pk not in shown
    bad = client.get("/admin/jobs/job/", {"q": "payload.__class__:x"})
    assert list(bad.context["cl"].result_list) == []
    assert "payload.__class__" in bad.content.decode()


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="the GIN indexes are PostgreSQL's")
@pytest.mark.parametrize(
    ("query", "index"),
    [("tag=a&tag=b", "job_tags_gin"), ("metadata.region=eu", "job_metadata_gin"), ("payload.n=1", "job_payload_gin")],
)
def test_label_filters_can_use_their_gin_index_on_postgresql(query, index):
    from django.http import QueryDict

    from jobs import selectors

    make_job(tags=["a", "b"], metadata={"region": "eu"}, payload={"n": 1})
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")  # a tiny table: make the planner show what it can use
    try:
        plan = selectors.job_filtered(QueryDict(query)).explain()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = on")

    assert index in plan, plan
