"""POST /jobs/{id}/retry and /cancel through the API, with a real (in-process) RQ worker."""

from __future__ import annotations

import pytest

from jobs import redis_store
from jobs.models import Job, JobStatus
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_retry_of_failed_job_is_202_and_runs_again_with_fresh_budget(api, submit, run_worker, no_backoff):
    job = submit({"type": "fail", "max_retries": 1})
    run_worker()
    assert api.get(f"/jobs/{job['job_id']}").json()["attempts"] == 2

    response = api.post(f"/jobs/{job['job_id']}/retry")

    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    run_worker()
    after = api.get(f"/jobs/{job['job_id']}").json()
    assert after["status"] == "failed"
    assert after["attempts"] == 4  # attempts keep counting; the fresh budget allowed 1 + 1 more runs


def test_retry_of_cancelled_job_runs_it(api, submit, run_worker):
    job = submit({"type": "echo", "payload": {"v": 1}})
    api.post(f"/jobs/{job['job_id']}/cancel")

    assert api.post(f"/jobs/{job['job_id']}/retry/").status_code == 202
    run_worker()

    assert api.get(f"/jobs/{job['job_id']}").json()["status"] == "succeeded"


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SUCCEEDED, JobStatus.PENDING])
def test_retry_of_job_that_is_not_failed_or_cancelled_is_409(api, submit, status):
    job = submit({"type": "echo"})
    Job.objects.filter(job_id=job["job_id"]).update(status=status)

    response = api.post(f"/jobs/{job['job_id']}/retry")

    assert response.status_code == 409
    assert status in response.json()["detail"]
    assert Job.objects.get(job_id=job["job_id"]).status == status


def test_cancel_of_queued_job_is_202_and_removes_it_from_its_queue(api, submit, run_worker):
    job = submit({"type": "echo"})

    response = api.post(f"/jobs/{job['job_id']}/cancel")

    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert redis_store.queue("default").job_ids == []
    run_worker()
    assert api.get(f"/jobs/{job['job_id']}").json()["attempts"] == 0


def test_cancel_of_scheduled_job_removes_it_from_the_schedule(api, submit):
    job = submit({"type": "echo", "delay": 3600})

    assert api.post(f"/jobs/{job['job_id']}/cancel").status_code == 202

    assert redis_store.queue("default").scheduled_job_registry.get_job_ids() == []


def test_job_cancelled_while_in_redis_is_never_run(api, submit, run_worker):
    job = submit({"type": "echo"})
    # The cancel reaches the database but not Redis: the worker must still not run it.
    Job.objects.filter(job_id=job["job_id"]).update(status=JobStatus.CANCELLED)

    run_worker()

    assert api.get(f"/jobs/{job['job_id']}").json()["attempts"] == 0


def test_cancel_of_started_job_sends_rq_stop_command(api, submit):
    job = submit({"type": "sleep", "payload": {"seconds": 5}})
    Job.objects.filter(job_id=job["job_id"]).update(status=JobStatus.STARTED)
    rq_job = redis_store.queue("default").fetch_job(job["job_id"])
    rq_job.worker_name = "worker-1"
    rq_job.save()
    pubsub = redis_store.connection().pubsub()
    pubsub.subscribe("rq:pubsub:worker-1")
    pubsub.get_message(timeout=1)  # the subscribe confirmation

    response = api.post(f"/jobs/{job['job_id']}/cancel")

    assert response.status_code == 202
    message = pubsub.get_message(timeout=1)
    assert message is not None and b"stop-job" in message["data"]
    assert job["job_id"].encode() in message["data"]


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_cancel_of_finished_job_is_409(api, submit, status):
    job = submit({"type": "echo"})
    Job.objects.filter(job_id=job["job_id"]).update(status=status)

    response = api.post(f"/jobs/{job['job_id']}/cancel")

    assert response.status_code == 409
    assert Job.objects.get(job_id=job["job_id"]).status == status


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_actions_on_unknown_job_are_404(api, action):
    response = api.post(f"/jobs/7b97c11a-024a-411e-b3f7-7e216534d7e4/{action}")

    assert response.status_code == 404


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_actions_need_an_api_key(anon, submit, action):
    job = submit({"type": "echo"})

    response = anon.post(f"/jobs/{job['job_id']}/{action}")

    assert response.status_code == 401
    assert Job.objects.get(job_id=job["job_id"]).status == JobStatus.QUEUED


def test_staff_session_may_write_and_other_users_are_refused(anon):
    staff = make_user("ops", "add_job")
    plain = make_user("visitor", staff=False)

    anon.force_login(plain)
    assert anon.post("/jobs", {"type": "echo"}, format="json").status_code == 403
    anon.force_login(staff)
    assert anon.post("/jobs", {"type": "echo"}, format="json").status_code == 201
