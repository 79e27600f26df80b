"""POST /jobs/bulk/retry and /jobs/bulk/cancel, and the admin's actions over "all N matching"."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from jobs import redis_store, services
from jobs.models import AuditEntry, Job, JobEvent, JobStatus
from jobs.services import bulk
from tests.factories import make_job, make_jobs, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def bulk_post(client, action: str, body) -> object:
    return client.post(f"/jobs/bulk/{action}", body, format="json")


def test_bulk_cancel_cancels_what_the_filter_matches_and_audits_once(api):
    mine = make_jobs(3, tags=["nightly"], status=JobStatus.QUEUED)
    done = make_job(tags=["nightly"], status=JobStatus.SUCCEEDED)
    other = make_job(tags=["other"], status=JobStatus.QUEUED)

    response = bulk_post(api, "cancel", {"filter": {"tag": "nightly"}})

    assert response.status_code == 200, response.content
    assert response.json() == {"matched": 4, "changed": 3}
    assert {job.status for job in Job.objects.filter(pk__in=[job.pk for job in mine])} == {JobStatus.CANCELLED}
    assert Job.objects.get(pk=done.pk).status == JobStatus.SUCCEEDED
    assert Job.objects.get(pk=other.pk).status == JobStatus.QUEUED
    (entry,) = AuditEntry.objects.all()
    assert entry.action == "jobs.bulk_cancel"
    assert entry.actor == "api-key:bootstrap"
    assert entry.detail == {"filter": {"tag": "nightly"}, "matched": 4, "changed": 3}
    # Each job went through job_cancel: its own timeline row, same actor.
    assert JobEvent.objects.filter(to_status=JobStatus.CANCELLED, actor="api-key:bootstrap").count() == 3


def test_bulk_retry_requeues_failed_jobs_matched_by_metadata_and_payload(api):
    failed = make_job(status=JobStatus.FAILED, metadata={"region": "eu"}, payload={"customer_id": 42})
    make_job(status=JobStatus.FAILED, metadata={"region": "us"}, payload={"customer_id": 42})

    response = bulk_post(
        api, "retry", {"filter": {"metadata.region": "eu", "payload.customer_id": 42, "status": "failed"}}
    )

    assert response.json() == {"matched": 1, "changed": 1}
    assert Job.objects.get(pk=failed.pk).status == JobStatus.QUEUED
    assert redis_store.queue("default").job_ids == [str(failed.job_id)]


def test_a_dry_run_only_counts(api):
    make_jobs(2, status=JobStatus.FAILED, tags=["x"])

    response = bulk_post(api, "retry", {"filter": {"tag": ["x"]}, "dry_run": True})

    assert response.json() == {"matched": 2, "changed": 0}
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.FAILED}
    assert not AuditEntry.objects.exists()


def test_bulk_works_through_more_jobs_than_one_batch(api, monkeypatch):
    monkeypatch.setattr(bulk, "BULK_BATCH_SIZE", 3)
    make_jobs(8, status=JobStatus.FAILED, tags=["many"])
    batches = []

    def counting_retry(*, job, actor):
        batches.append(job.pk)
        return services.job_retry(job=job, actor=actor)

    monkeypatch.setitem(bulk.ACTIONS, "retry", (counting_retry, JobStatus.QUEUED))

    response = bulk_post(api, "retry", {"filter": {"tag": "many"}})

    assert response.json() == {"matched": 8, "changed": 8}
    assert batches == sorted(batches, reverse=True) and len(set(batches)) == 8  # each once, newest first
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.QUEUED}


def test_a_job_that_moved_meanwhile_is_skipped_not_forced(api, monkeypatch):
    jobs = make_jobs(2, status=JobStatus.QUEUED, tags=["race"])
    real_cancel = services.job_cancel

    def finished_meanwhile(*, job, actor):
        if job.pk == jobs[0].pk:
            Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
        return real_cancel(job=job, actor=actor)

    monkeypatch.setitem(bulk.ACTIONS, "cancel", (finished_meanwhile, JobStatus.CANCELLED))

    response = bulk_post(api, "cancel", {"filter": {"tag": "race"}})

    assert response.json() == {"matched": 2, "changed": 1}
    assert Job.objects.get(pk=jobs[0].pk).status == JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({}, "filter"),
        ({"filter": {}}, "filter"),
        ({"filter": "tag=a"}, "filter"),
        ({"filter": {"nope": "x"}}, "filter"),
        ({"filter": {"status": "exploded"}}, "filter"),
        ({"filter": {"payload.__class__": "x"}}, "filter"),
        ({"filter": {"metadata.a.b": "x"}}, "filter"),
        ({"filter": {"metadata.region": {"$ne": 1}}}, "filter"),
        ({"filter": {"tag": [None]}}, "filter"),
        ({"filter": {"tag": []}}, "filter"),
        ({"filter": {"tag": "x" * 300}}, "filter"),
        ({"filter": {"created_after": "yesterday"}}, "filter"),
        ({"filter": {"tag": "a"}, "dry_run": "maybe"}, "dry_run"),
    ],
)
def test_bad_bulk_bodies_are_400_and_change_nothing(api, body, where):
    job = make_job(status=JobStatus.QUEUED, tags=["a"])

    response = bulk_post(api, "cancel", body)

    assert response.status_code == 400, response.content
    assert where in response.json()
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert not AuditEntry.objects.exists()


def test_bulk_writes_need_the_write_scope(anon):
    job = make_job(status=JobStatus.QUEUED, tags=["a"])
    _, read_key = services.api_key_create(name="reader", scope="read")
    reader = APIClient()
    reader.credentials(HTTP_X_API_KEY=read_key)

    assert bulk_post(anon, "cancel", {"filter": {"tag": "a"}}).status_code == 401
    assert bulk_post(reader, "cancel", {"filter": {"tag": "a"}}).status_code == 403
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED


def test_a_session_needs_the_permission_of_the_single_action(anon):
    job = make_job(status=JobStatus.QUEUED, tags=["a"])
    anon.force_login(make_user("retrier", "retry_job"))

    assert bulk_post(anon, "cancel", {"filter": {"tag": "a"}}).status_code == 403
    assert bulk_post(anon, "retry", {"filter": {"tag": "a"}}).status_code == 200
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED


def changelist_action(client, action: str, query: str = "", select_across: bool = True, ids=()):
    data = {"action": action, "select_across": "1" if select_across else "0", "index": "0"}
    data["_selected_action"] = [str(pk) for pk in ids] or [str(Job.objects.first().pk)]
    return client.post(f"/admin/jobs/job/{query}", data, follow=True)


def test_the_admin_cancels_all_matching_jobs_in_batches(client, monkeypatch):
    monkeypatch.setattr(bulk, "BULK_BATCH_SIZE", 2)
    client.force_login(make_user("op", "view_job", "cancel_job"))
    queued = make_jobs(5, status=JobStatus.QUEUED, tags=["urgent"])
    untouched = make_job(status=JobStatus.QUEUED, tags=["later"])

    page = changelist_action(client, "cancel_selected", "?q=tag%3Aurgent", ids=[queued[0].pk])

    assert "Cancelled 5 job(s)." in page.content.decode()
    assert Job.objects.filter(status=JobStatus.CANCELLED).count() == 5
    assert Job.objects.get(pk=untouched.pk).status == JobStatus.QUEUED
    (entry,) = AuditEntry.objects.all()
    assert entry.actor == "admin:op"
    assert entry.detail["filter"]["select_across"] is True
    assert "urgent" in entry.detail["filter"]["admin_changelist"]


def test_the_admin_action_on_selected_rows_only_touches_them(client):
    client.force_login(make_user("op", "view_job", "retry_job"))
    failed = make_jobs(3, status=JobStatus.FAILED)
    done = make_job(status=JobStatus.SUCCEEDED)

    page = changelist_action(client, "retry_selected", select_across=False, ids=[failed[0].pk, done.pk])

    text = page.content.decode()
    assert "Retried 1 job(s)." in text
    assert f"Refused 1: {str(done.job_id)[:8]}" in text
    assert f"{str(failed[0].job_id)[:8]}: Job" not in text  # the job it retried is not named as refused
    assert Job.objects.filter(status=JobStatus.FAILED).count() == 2
    assert AuditEntry.objects.get().detail["filter"]["job_ids"]
