"""Jobs submitted over HTTP and run by real `manage.py rqworker` processes on a real Redis."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from .harness import Api, Process, Workers, parse_time, stop, wait_until

pytestmark = pytest.mark.integration


def test_submitted_echo_job_succeeds_through_real_worker(api: Api, workers: Workers) -> None:
    payload = {"message": "hello", "n": 3, "nested": {"list": [1, "two", None], "ok": True}}
    before = api.metrics()

    response = api.post("/jobs", {"type": "echo", "payload": payload})

    assert response.status_code == 201, response.text
    job = response.json()
    api.submitted.append(job["job_id"])
    assert job["status"] == "queued"
    assert job["type"] == "echo" and job["queue"] == "default" and job["attempts"] == 0
    location = response.headers.get("Location", "")
    assert location.endswith(f"/jobs/{job['job_id']}"), location
    assert api.get(location).json()["job_id"] == job["job_id"]
    submitted = api.metrics()
    assert submitted.value("jobs_submitted_total", type="echo") == before.value("jobs_submitted_total", type="echo") + 1
    assert submitted.value("jobs_enqueued_total", queue="default", type="echo") == (
        before.value("jobs_enqueued_total", queue="default", type="echo") + 1
    )

    workers.run_burst()

    done = api.job(job["job_id"])
    assert done["status"] == "succeeded", done
    assert done["result"] == payload
    assert done["attempts"] == 1
    assert done["error"] == ""
    created, enqueued = parse_time(done["created_at"]), parse_time(done["enqueued_at"])
    started, finished = parse_time(done["started_at"]), parse_time(done["finished_at"])
    assert created <= enqueued <= started <= finished, done
    after = api.metrics()
    for name, labels in [
        ("jobs_submitted_total", {"type": "echo"}),
        ("jobs_enqueued_total", {"queue": "default", "type": "echo"}),
        ("jobs_started_total", {"type": "echo"}),
        ("jobs_succeeded_total", {"type": "echo"}),
        ("job_duration_seconds_count", {"type": "echo"}),
    ]:
        assert after.value(name, **labels) == before.value(name, **labels) + 1, (name, labels)
    assert after.value("jobs_failed_total", type="echo") == before.value("jobs_failed_total", type="echo")


def test_email_job_succeeds(api: Api, workers: Workers) -> None:
    payload = {"to": "ops@example.com", "subject": "hi", "body": "x"}
    job = api.submit(type="email", payload=payload)

    # DEBUG=0 would mean SMTP; the console backend writes the message to the worker's output instead.
    worker = workers.run_burst(EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend")

    done = api.job(job["job_id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1
    assert done["result"] == {"sent": 1, "to": ["ops@example.com"]}
    output = worker.output()
    assert "Subject: hi" in output and "To: ops@example.com" in output, output


def test_cancel_running_sleep_job_stops_it(api: Api, workers: Workers) -> None:
    before = api.metrics()
    job = api.submit(type="sleep", payload={"seconds": 30})
    worker = workers.start()

    started = api.wait_for_status(job["job_id"], "started", timeout=30)
    assert started["attempts"] == 1
    assert api.metrics().value("jobs_workers") >= 1

    response = api.post(f"/jobs/{job['job_id']}/cancel")

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
    cancelled_at = time.monotonic()
    # The worker is told to stop the job (RQ's stop-job command) and interrupts it, rather than letting it sleep on.
    wait_until(
        lambda: f"stopping job {job['job_id']} on request" in worker.output(),
        timeout=15,
        message=lambda: f"the worker did not stop the job:\n{worker.output()}",
    )
    assert time.monotonic() - cancelled_at < 15
    time.sleep(2)  # time enough for a surviving handler to report a result over the cancellation
    final = api.job(job["job_id"])
    assert final["status"] == "cancelled", final
    assert final["result"] is None, final
    assert final["attempts"] == 1
    run_time = (parse_time(final["finished_at"]) - parse_time(final["started_at"])).total_seconds()
    assert 0 <= run_time < 20, final
    assert api.post(f"/jobs/{job['job_id']}/cancel").status_code == 409
    after = api.metrics()
    assert after.value("jobs_cancelled_total", type="sleep") == before.value("jobs_cancelled_total", type="sleep") + 1
    assert after.value("jobs_succeeded_total", type="sleep") == before.value("jobs_succeeded_total", type="sleep")

    # The worker survived the interrupted job and takes the next one.
    assert worker.alive(), worker.output()
    echo = api.submit(type="echo", payload={"after": "cancel"})
    assert api.wait_for_status(echo["job_id"], "succeeded", timeout=20)["result"] == {"after": "cancel"}
    assert worker.alive(), worker.output()


def test_failed_job_retried_manually_then_fails_again(api: Api, workers: Workers) -> None:
    before = api.metrics()
    job = api.submit(type="fail", payload={"message": "drill"}, max_retries=1)
    workers.start(scheduler=True)  # the automatic retry is scheduled with backoff: RQ's scheduler must run

    failed = api.wait_for_job(
        job["job_id"], lambda j: j["status"] == "failed", timeout=45, what="failed after its retry"
    )
    assert failed["attempts"] == 2, failed
    assert "drill" in failed["error"], failed

    response = api.post(f"/jobs/{job['job_id']}/retry")

    assert response.status_code == 202, response.text
    retried = response.json()
    assert retried["status"] == "queued", retried
    assert retried["attempts"] == 2, retried
    # A fresh budget of max_retries=1: one run and one automatic retry, four runs in all.
    failed_again = api.wait_for_job(
        job["job_id"],
        lambda j: j["status"] == "failed" and j["attempts"] >= 4,
        timeout=45,
        what="failed again after a manual retry",
    )
    assert failed_again["attempts"] == 4, failed_again
    time.sleep(2)  # no fifth run may follow
    assert api.job(job["job_id"])["attempts"] == 4

    after = api.metrics()
    expected = [
        ("jobs_submitted_total", {"type": "fail"}, 1),
        ("jobs_started_total", {"type": "fail"}, 4),
        ("jobs_retried_total", {"type": "fail", "reason": "auto"}, 2),
        ("jobs_retried_total", {"type": "fail", "reason": "manual"}, 1),
        ("jobs_failed_total", {"type": "fail"}, 2),
        ("jobs_enqueued_total", {"type": "fail", "queue": "default"}, 4),
    ]
    for name, labels, increase in expected:
        assert after.value(name, **labels) - before.value(name, **labels) == increase, (name, labels)

    succeeded = api.submit(type="echo", payload={"x": 1})
    api.wait_for_status(succeeded["job_id"], "succeeded", timeout=20)
    refused = api.post(f"/jobs/{succeeded['job_id']}/retry")
    assert refused.status_code == 409, refused.text
    assert "detail" in refused.json()
    assert api.job(succeeded["job_id"])["status"] == "succeeded"


def _scheduler_phase(output: str) -> float | None:
    """The fraction of a second at which the worker's RQ scheduler started (it then ticks once a second)."""
    match = re.search(r"\d\d:\d\d:\d\d[,.](\d{3}).*Scheduler for .* started", output)
    return int(match.group(1)) / 1000 if match else None


def _start_worker_with_scheduler(workers: Workers) -> Process:
    worker = workers.start(scheduler=True)
    wait_until(
        lambda: "Scheduler for" in worker.output(),
        timeout=30,
        message=lambda: f"the worker's RQ scheduler did not start:\n{worker.output()}",
    )
    return worker


def test_delay_job_is_scheduled_then_runs(api: Api, workers: Workers) -> None:
    for _ in range(5):
        worker = _start_worker_with_scheduler(workers)
        # Prefer a scheduler that ticks early in each second: then a job due late in a second and
        # released by the second of its run_at, rather than at its run_at, is seen to start early.
        phase = _scheduler_phase(worker.output())
        if phase is None or phase < 0.7:
            break
        stop(worker)
    delayed = api.submit(type="echo", payload={"delay": 2}, delay=2)
    assert delayed["status"] == "scheduled", delayed
    assert delayed["enqueued_at"] is None, delayed
    lag = (parse_time(delayed["run_at"]) - parse_time(delayed["created_at"])).total_seconds()
    assert abs(lag - 2) < 0.5, delayed
    # Two more at an explicit run_at just before a whole second: RQ's scheduler ticks once a second, so
    # a job released by the second of its run_at rather than the instant would start before it.
    second = datetime.now(UTC).replace(microsecond=0)
    run_ats = [second + timedelta(seconds=seconds, milliseconds=999) for seconds in (2, 3)]
    at_times = [
        api.submit(type="echo", payload={"at": run_at.isoformat()}, run_at=run_at.isoformat().replace("+00:00", "Z"))
        for run_at in run_ats
    ]
    for job, run_at in zip(at_times, run_ats, strict=True):
        assert job["status"] == "scheduled", job
        assert parse_time(job["run_at"]) == run_at, job

    jobs = [delayed, *at_times]
    done = [api.wait_for_status(job["job_id"], "succeeded", timeout=30) for job in jobs]

    early = []
    for job, finished in zip(jobs, done, strict=True):
        assert finished["attempts"] == 1, finished
        assert finished["result"] == job["payload"], finished
        assert finished["run_at"] == job["run_at"], finished
        if parse_time(finished["started_at"]) < parse_time(finished["run_at"]):
            early.append(f"{finished['job_id']}: run_at {finished['run_at']}, started_at {finished['started_at']}")
    assert not early, "jobs started before their run_at:\n" + "\n".join(early)
