"""Django's Tasks API on the real stack: `@task` functions of a module no setting names (tests.taskapp.tasks),
enqueued from `manage.py shell` and from a view, run by `manage.py rqworker` on a real redis-server, read
back with `get_result`; failures, retries, cancel over HTTP, run_after, priorities and a killed worker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime

import pytest
import requests

from sentinelflow_site.processes import free_port

from .harness import REPO_ROOT, Api, Stack, Workers, parse_time, spawn, stop, wait_healthy, wait_until

pytestmark = pytest.mark.integration

ADD = "tests.taskapp.tasks.add"


def shell(stack: Stack, code: str, **env: str) -> str:
    """Run `code` in `manage.py shell -c` against the stack; its printed output."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=REPO_ROOT,
        env=stack.env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"manage.py shell -c {code!r} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    # The last line: Django's shell may say first how many objects it imported automatically.
    return done.stdout.strip().splitlines()[-1]


def enqueue(stack: Stack, api: Api, call: str, **env: str) -> str:
    """Enqueue `call` (an expression on tests.taskapp.tasks, e.g. `add.enqueue(2, 3)`) from the shell; its id."""
    code = f"from datetime import datetime; from tests.taskapp import tasks; print(tasks.{call}.id)"
    job_id = shell(stack, code, **env)
    api.submitted.append(job_id)
    return job_id


def result_of(stack: Stack, task: str, job_id: str) -> dict:
    """get_result(job_id) of tests.taskapp.tasks.`task`, read in another process."""
    code = (
        "import json; from tests.taskapp import tasks\n"
        f"r = tasks.{task}.get_result({job_id!r})\n"
        "print(json.dumps({'status': str(r.status), 'attempts': r.attempts, 'workers': r.worker_ids,"
        " 'value': r.return_value if r.status == 'SUCCESSFUL' else None,"
        " 'errors': [[e.exception_class_path, e.traceback] for e in r.errors]}))"
    )
    return json.loads(shell(stack, code))


def test_a_task_enqueued_from_the_shell_runs_on_rqworker_and_is_read_back(stack: Stack, api: Api, workers: Workers):
    before = api.metrics()

    job_id = enqueue(stack, api, "add.enqueue(2, 3)")

    job = api.job(job_id)
    assert job["type"] == ADD and job["payload"] == {"args": [2, 3], "kwargs": {}} and job["status"] == "queued"
    assert result_of(stack, "add", job_id)["status"] == "READY"
    workers.run_burst()

    assert result_of(stack, "add", job_id) == {
        "status": "SUCCESSFUL",
        "attempts": 1,
        "workers": [workers.processes[-1].name],
        "value": 5,
        "errors": [],
    }
    listed = api.get("/jobs", type=ADD).json()["results"]
    assert job_id in [row["job_id"] for row in listed]
    after = api.metrics()
    for name in ("jobs_submitted_total", "jobs_started_total", "jobs_succeeded_total"):
        assert after.value(name, type=ADD) == before.value(name, type=ADD) + 1, name


def test_an_async_task_function_runs_on_rqworker(stack: Stack, api: Api, workers: Workers):
    job_id = enqueue(stack, api, "async_add.enqueue(4, 5)")

    workers.run_burst()

    assert result_of(stack, "async_add", job_id)["value"] == 9


def test_a_task_enqueued_from_a_view_runs_and_is_read_back(stack: Stack, api: Api, workers: Workers):
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "sentinelflow_site.wsgi:application", "-b", f"127.0.0.1:{port}"]
    web = spawn(
        "gunicorn-taskapp",
        [*args, "-w", "1", "--no-control-socket"],
        env=stack.env(DJANGO_SETTINGS_MODULE="tests.taskapp.settings"),
        log_dir=stack.log_dir,
    )
    try:
        wait_healthy(web, f"http://127.0.0.1:{port}")
        response = requests.post(f"http://127.0.0.1:{port}/taskapp/add", data={"a": 20, "b": 22}, timeout=10)
    finally:
        stop(web)

    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    api.submitted.append(job_id)
    workers.run_burst()
    assert result_of(stack, "add", job_id)["value"] == 42


def test_failures_and_retries_behave_as_for_any_job(stack: Stack, api: Api, workers: Workers):
    # The enqueuing process decides the retry budget: DEFAULT_MAX_RETRIES there (or the backend's OPTIONS).
    flaky = enqueue(stack, api, "flaky.enqueue(succeed_on=2)", DEFAULT_MAX_RETRIES="1")
    failing = enqueue(stack, api, "fail.enqueue('boom')", DEFAULT_MAX_RETRIES="1")
    workers.start(scheduler=True)  # automatic retries wait for their backoff in RQ's scheduler

    api.wait_for_status(flaky, "succeeded")
    failed = api.wait_for_status(failing, "failed")

    assert result_of(stack, "flaky", flaky)["value"] == 2
    read = result_of(stack, "fail", failing)
    assert read["status"] == "FAILED" and read["attempts"] == 2 == failed["attempts"]
    [[error_class, traceback]] = read["errors"]
    assert error_class == "tests.taskapp.tasks.TaskAppError" and "TaskAppError: boom" in traceback

    assert api.post(f"/jobs/{failing}/retry").status_code == 202
    api.wait_for_job(failing, lambda job: job["status"] == "failed" and job["attempts"] == 4, what="failed again")


def test_cancel_over_http_stops_a_running_task(stack: Stack, api: Api, workers: Workers):
    job_id = enqueue(stack, api, "nap.enqueue(60)")
    worker = workers.start()
    api.wait_for_status(job_id, "started", timeout=30)

    response = api.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 202, response.text
    wait_until(
        lambda: f"stopping job {job_id} on request" in worker.output(),
        timeout=15,
        message=lambda: f"the worker did not stop the task:\n{worker.output()}",
    )
    read = result_of(stack, "nap", job_id)
    assert read["status"] == "FAILED" and read["value"] is None
    assert [error[0] for error in read["errors"]] == ["jobs.exceptions.JobCancelled"]
    assert worker.alive()


def test_run_after_holds_the_task_until_then(stack: Stack, api: Api, workers: Workers):
    # run_after is taken in the enqueuing process, so that a slow start of that process cannot eat the delay.
    code = (
        "from datetime import UTC, datetime, timedelta; from tests.taskapp import tasks\n"
        "run_after = datetime.now(UTC) + timedelta(seconds=8)\n"
        "print(tasks.clock.using(run_after=run_after).enqueue().id, run_after.isoformat())"
    )
    job_id, stamp = shell(stack, code).split()
    api.submitted.append(job_id)
    run_after = datetime.fromisoformat(stamp)
    scheduled = api.job(job_id)
    assert scheduled["status"] == "scheduled" and parse_time(scheduled["run_at"]) == run_after, scheduled
    assert result_of(stack, "clock", job_id)["status"] == "READY"
    workers.start(scheduler=True)

    done = api.wait_for_status(job_id, "succeeded", timeout=40)
    assert parse_time(done["started_at"]) >= run_after.replace(microsecond=0)
    assert datetime.fromisoformat(result_of(stack, "clock", job_id)["value"]) >= run_after.replace(microsecond=0)


def test_priorities_pick_the_queue_and_higher_runs_first(stack: Stack, api: Api, workers: Workers):
    low = enqueue(stack, api, "background.enqueue('low')")
    normal = enqueue(stack, api, "add.enqueue(1, 1)")
    high = enqueue(stack, api, "urgent.enqueue('high')")
    assert [api.job(job_id)["queue"] for job_id in (low, normal, high)] == ["low", "default", "high"]

    workers.run_burst()

    started = {job_id: parse_time(api.job(job_id)["started_at"]) for job_id in (low, normal, high)}
    assert started[high] < started[normal] < started[low], started


def test_a_worker_killed_mid_task_is_recovered_by_the_sentinel(stack: Stack, api: Api, workers: Workers):
    sentinel = spawn(
        "sentinel-tasks",
        [sys.executable, "manage.py", "sentinel", "--interval", "1"],
        env=stack.env(),
        log_dir=stack.log_dir,
    )
    try:
        job_id = enqueue(stack, api, "slow_first_time.enqueue(120)")
        doomed = workers.start()
        api.wait_for_status(job_id, "started", timeout=30)

        stop(doomed, signals=(signal.SIGKILL,))
        workers.start()

        api.wait_for_status(job_id, "succeeded", timeout=60)
    finally:
        stop(sentinel)

    read = result_of(stack, "slow_first_time", job_id)
    assert read["status"] == "SUCCESSFUL" and read["value"] == 2 and read["attempts"] == 2
