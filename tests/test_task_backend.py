"""jobs.backends.SentinelflowBackend: Django's Tasks API on sentinelflow (the in-process suite, on fakeredis).

`.ci/run` runs this module on Django 5.2 with the `django-tasks` backport and on Django 6 with `django.tasks`.
The tasks are tests.taskapp.tasks, a module that no setting names.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import os
import re
import types

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from jobs import redis_store, services
from jobs.backends import SentinelflowBackend
from jobs.handlers import get_job_type
from jobs.handlers.django_task import exception_class_path
from jobs.handlers.task_api import PACKAGE, InvalidTask, TaskResultDoesNotExist, TaskResultStatus
from jobs.models import Job, JobEvent, JobStatus
from tests.factories import make_job, make_user
from tests.taskapp import tasks
from tests.taskapp.tasks import task as task_decorator

pytestmark = pytest.mark.django_db(transaction=True)


def job_of(result) -> Job:
    return Job.objects.get(job_id=result.id)


def test_the_tasks_api_of_this_django_is_used():
    import django

    assert PACKAGE == ("django.tasks" if django.VERSION >= (6, 0) else "django_tasks")


def test_enqueue_stores_a_job_and_the_worker_runs_it(run_worker, metric):
    result = tasks.add.enqueue(2, 3)

    job = job_of(result)
    assert result.status == TaskResultStatus.READY and not result.is_finished
    assert job.type == "tests.taskapp.tasks.add" and job.payload == {"args": [2, 3], "kwargs": {}}
    assert job.status == JobStatus.QUEUED and job.queue == "default" and job.submitted_by == "tasks:default"
    assert redis_store.queue("default").count == 1

    run_worker()

    done = tasks.add.get_result(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL and done.return_value == 5
    assert done.attempts == 1 and done.errors == [] and done.finished_at is not None
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 5
    assert job_of(result).result == 5
    assert metric("jobs_succeeded_total", type="tests.taskapp.tasks.add") == 1


def test_enqueue_in_a_transaction_queues_after_the_commit():
    with transaction.atomic():
        result = tasks.add.enqueue(1, 1)
        assert redis_store.queue("default").count == 0  # a worker must not see a job it cannot read yet

    assert redis_store.queue("default").count == 1
    assert job_of(result).status == JobStatus.QUEUED


def test_keyword_arguments_and_tuples_are_stored_as_json(run_worker):
    result = tasks.add.enqueue(a=(1,), b=[2])

    assert job_of(result).payload == {"args": [], "kwargs": {"a": [1], "b": [2]}}
    run_worker()
    assert tasks.add.get_result(result.id).return_value == [1, 2]


@pytest.mark.parametrize("argument", [dt.date(2026, 1, 1), object(), float("nan"), {1, 2}])
def test_arguments_that_are_not_json_are_refused_and_nothing_is_stored(argument):
    with pytest.raises(TypeError, match=re.escape("arguments of task 'tests.taskapp.tasks.add' must be JSON")):
        tasks.add.enqueue(argument, 1)

    assert not Job.objects.exists()
    assert redis_store.queue("default").count == 0


def test_a_result_that_is_not_json_fails_the_job_at_once_saying_why(run_worker):
    result = tasks.not_json.enqueue()

    run_worker()

    failed = tasks.not_json.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED and failed.attempts == 1
    assert failed.errors[0].exception_class_path == "jobs.exceptions.PermanentJobError"
    assert "the result of task 'tests.taskapp.tasks.not_json' must be JSON" in failed.errors[0].traceback


def test_a_failing_task_is_retried_then_fails_with_its_exception_class_and_traceback(run_worker, no_backoff):
    result = tasks.fail.enqueue("boom")

    run_worker()

    failed = tasks.fail.get_result(result.id)
    job = job_of(result)
    assert failed.status == TaskResultStatus.FAILED and job.status == JobStatus.FAILED
    assert failed.attempts == job.attempts == 1 + job.max_retries == 4
    [error] = failed.errors
    assert error.exception_class_path == "tests.taskapp.tasks.TaskAppError"
    assert error.exception_class is tasks.TaskAppError
    assert "Traceback (most recent call last)" in error.traceback and "TaskAppError: boom" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        failed.return_value  # noqa: B018 - the property raises


def test_a_task_gets_its_job_id_and_attempt_through_its_context(run_worker, no_backoff):
    result = tasks.whoami.enqueue("me")
    flaky = tasks.flaky.enqueue(succeed_on=3)

    run_worker()

    assert tasks.whoami.get_result(result.id).return_value == {"label": "me", "job_id": result.id, "attempt": 1}
    retried = tasks.flaky.get_result(flaky.id)
    assert retried.status == TaskResultStatus.SUCCESSFUL and retried.return_value == 3
    assert retried.attempts == 3 and len(retried.worker_ids) == 3 and all(retried.worker_ids)


def test_backend_options_set_retries_and_timeout(settings, run_worker, no_backoff):
    settings.TASKS = {
        "default": {"BACKEND": "jobs.backends.SentinelflowBackend", "OPTIONS": {"MAX_RETRIES": 0, "TIMEOUT": 7}}
    }

    result = tasks.fail.enqueue("once")
    run_worker()

    job = job_of(result)
    assert job.max_retries == 0 and job.timeout == 7
    assert job.status == JobStatus.FAILED and job.attempts == 1


def test_run_after_schedules_the_job():
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)

    result = tasks.add.using(run_after=later).enqueue(1, 2)

    job = job_of(result)
    assert job.status == JobStatus.SCHEDULED and job.run_at == later
    assert result.status == TaskResultStatus.READY
    assert redis_store.queue("default").count == 0
    assert redis_store.queue("default").scheduled_job_registry.count == 1


def test_a_naive_run_after_is_refused():
    with pytest.raises(InvalidTask, match="aware"):
        tasks.add.using(run_after=dt.datetime(2030, 1, 1))


@pytest.mark.parametrize(
    ("task", "queue_name", "queue"),
    [
        (tasks.add, None, "default"),
        (tasks.urgent, None, "high"),
        (tasks.background, None, "low"),
        (tasks.urgent, "low", "low"),
        (tasks.add, "high", "high"),
    ],
)
def test_priority_moves_default_queue_tasks_and_queue_name_picks_the_queue(task, queue_name, queue):
    chosen = task.using(queue_name=queue_name) if queue_name else task

    assert job_of(chosen.enqueue("x") if task is not tasks.add else chosen.enqueue(1, 2)).queue == queue


def _long_named():
    return None


def test_a_task_whose_path_is_longer_than_a_job_type_is_refused_when_declared():
    function = types.FunctionType(_long_named.__code__, globals(), "_long_named")
    function.__module__ = "tests." + "deeply_nested." * 5 + "tasks"
    function.__qualname__ = "_long_named"

    with pytest.raises(InvalidTask, match="longer than 64 characters"):
        task_decorator(function)


@pytest.mark.parametrize(
    ("options", "valid"),
    [({}, True), ({"MAX_RETRIES": 0, "TIMEOUT": 5}, True), ({"MAX_RETRIES": "3"}, False), ({"TIMEOUT": 0}, False)],
)
def test_the_backends_options_are_checked(options, valid):
    backend = SentinelflowBackend("checked", {"OPTIONS": options})

    assert [message.id for message in backend.check()] == ([] if valid else ["jobs.E101"])


def test_backend_queues_outside_the_settings_queues_are_a_configuration_error():
    with pytest.raises(ImproperlyConfigured, match="urgent"):
        SentinelflowBackend("narrow", {"QUEUES": ["default", "urgent"]})


def test_an_unknown_queue_is_refused_when_the_task_names_it():
    with pytest.raises(InvalidTask, match="Queue 'urgent' is not valid"):
        tasks.add.using(queue_name="urgent")

    assert not Job.objects.exists()


def test_cancel_through_the_api_makes_the_result_failed_and_says_so(api):
    result = tasks.nap.enqueue(30)

    response = api.post(f"/jobs/{result.id}/cancel")

    assert response.status_code == 202, response.content
    cancelled = tasks.nap.get_result(result.id)
    assert cancelled.status == TaskResultStatus.FAILED
    assert [error.exception_class_path for error in cancelled.errors] == ["jobs.exceptions.JobCancelled"]
    assert redis_store.queue("default").count == 0


def test_a_retry_through_the_api_runs_the_task_again(api, run_worker, settings):
    settings.TASKS = {"default": {"BACKEND": "jobs.backends.SentinelflowBackend", "OPTIONS": {"MAX_RETRIES": 0}}}
    result = tasks.flaky.enqueue(succeed_on=2)
    run_worker()
    assert tasks.flaky.get_result(result.id).status == TaskResultStatus.FAILED

    assert api.post(f"/jobs/{result.id}/retry").status_code == 202
    run_worker()

    again = tasks.flaky.get_result(result.id)
    assert again.status == TaskResultStatus.SUCCESSFUL and again.return_value == 2 and again.attempts == 2


def run_async(coroutine):
    """Run `coroutine` to its end in a thread of its own (this thread may already have an event loop)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=30)


def test_the_async_variants(run_worker):
    # (An async task function runs on a real worker in tests/integration/test_django_tasks.py: this thread
    # may hold another test's event loop, where the worker's async_to_sync cannot run.)
    result = run_async(tasks.add.aenqueue(4, 5))
    run_worker()

    fetched = run_async(tasks.add.aget_result(result.id))
    assert fetched.status == TaskResultStatus.SUCCESSFUL and fetched.return_value == 9
    run_async(result.arefresh())
    assert result.return_value == 9


def test_get_result_of_an_unknown_or_non_task_job_does_not_exist():
    echo = make_job(type="echo", payload={"n": 1})

    for result_id in ["00000000-0000-0000-0000-000000000000", "not-a-uuid", str(echo.job_id)]:
        with pytest.raises(TaskResultDoesNotExist):
            tasks.add.get_result(result_id)


def test_get_result_through_another_task_is_a_mismatch():
    result = tasks.add.enqueue(1, 2)

    with pytest.raises(Exception, match="Task does not match"):
        tasks.fail.get_result(result.id)


def test_a_task_job_is_listed_and_filtered_by_type_in_the_api(api, anon):
    result = tasks.add.enqueue(2, 3)
    make_job(type="echo")

    listed = api.get("/jobs", {"type": "tests.taskapp.tasks.add"}).json()["results"]
    assert [row["job_id"] for row in listed] == [result.id]
    assert listed[0]["payload"] == {"args": [2, 3], "kwargs": {}}
    # Without the read scope the arguments are hidden, as for any type that declares no harmless field.
    assert anon.get(f"/jobs/{result.id}").json()["payload"] == {"args": "[redacted]", "kwargs": "[redacted]"}
    assert api.get("/jobs", {"type": "not a path"}).status_code == 400


def test_the_timeline_names_the_backend_and_the_worker(run_worker):
    result = tasks.add.enqueue(2, 3)
    run_worker()

    actors = list(JobEvent.objects.filter(job=job_of(result)).values_list("to_status", "actor"))
    assert actors[0] == ("queued", "tasks:default")
    assert [status for status, _ in actors] == ["queued", "started", "succeeded"]


@pytest.mark.urls("tests.taskapp.urls")
def test_a_view_enqueues_a_task(client, run_worker):
    response = client.post("/taskapp/add", {"a": 20, "b": 22})

    assert response.status_code == 202
    run_worker()
    assert tasks.add.get_result(response.json()["id"]).return_value == 42


# --------------------------------------------------------------------------- an attacker names the callable


@pytest.mark.parametrize(
    "job_type", ["os.system", "tests.taskapp.tasks.plain_function", "tests.taskapp.tasks.add", "subprocess.run"]
)
def test_post_jobs_naming_a_callable_is_refused_and_nothing_is_stored(api, job_type, tmp_path):
    marker = tmp_path / "ran"

    response = api.post(
        "/jobs", {"type": job_type, "payload": {"args": [f"touch {marker}"], "kwargs": {}}}, format="json"
    )

    assert response.status_code == 400
    assert "type" in response.json()
    batch = api.post("/jobs/batch", {"jobs": [{"type": "echo"}, {"type": job_type}]}, format="json")
    assert batch.status_code == 400 and "type" in batch.json()["jobs"]["1"]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("job_type", "args"),
    [
        ("os.system", ["touch {marker}"]),
        ("tests.taskapp.tasks.plain_function", ["{marker}"]),
        ("tests.taskapp.tasks.TaskAppError", ["{marker}"]),
        ("tests.taskapp.tasks.nowhere", ["{marker}"]),
        ("no_such_module_anywhere.fn", ["{marker}"]),
    ],
)
def test_a_stored_job_naming_what_is_not_a_task_fails_without_running_it(run_worker, tmp_path, job_type, args):
    """A row that did not come from the backend (written by hand, or tampered with) runs nothing but tasks."""
    marker = tmp_path / "ran"
    job = make_job(
        type=job_type,
        status=JobStatus.PENDING,
        payload={"args": [arg.format(marker=marker) for arg in args], "kwargs": {}},
    )
    services.job_enqueue(job=job, actor="test")

    run_worker()

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts == 1, job.error
    assert "PermanentJobError" in job.error
    assert not marker.exists()


def test_an_alias_of_a_task_is_not_run_under_the_alias(run_worker, tmp_path):
    marker = tmp_path / "ran"
    tasks.touch_alias = tasks.touch  # another name for the same Task object
    try:
        job = make_job(
            type="tests.taskapp.tasks.touch_alias", status=JobStatus.PENDING, payload={"args": [str(marker)]}
        )
        services.job_enqueue(job=job, actor="test")
        run_worker()
    finally:
        del tasks.touch_alias

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "is the task 'tests.taskapp.tasks.touch'" in job.error
    assert not marker.exists()


def test_making_a_task_job_type_imports_nothing():
    import sys

    name = "tests.taskapp.never_imported"
    assert get_job_type(f"{name}.fn") is not None
    assert name not in sys.modules
    assert get_job_type("not a path") is None and get_job_type("os") is None


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('Traceback (most recent call last):\n  File "x", line 1\nValueError: a\nb\n', "builtins.ValueError"),
        ("Traceback (most recent call last):\n  x\nmy.mod.Err: boom\n", "my.mod.Err"),
        (
            "Traceback (most recent call last):\n  x\nKeyError: 1\n\nDuring handling of the above exception, another"
            " exception occurred:\n\nTraceback (most recent call last):\n  y\nmy.Err: z\n",
            "my.Err",
        ),
        ("The run was lost: its worker stopped. Run again.", "builtins.RuntimeError"),
    ],
)
def test_the_exception_class_is_read_from_the_stored_traceback(text, path):
    assert exception_class_path(text) == path


def test_the_default_backend_is_sentinelflow():
    from jobs.handlers.task_api import task_backends

    assert isinstance(task_backends["default"], SentinelflowBackend)
    assert os.environ.get("TESTING") == "1"


def test_the_admin_shows_a_task_job_with_its_timeline_and_cancels_and_retries_it(client, run_worker):
    result = tasks.add.enqueue(2, 3)
    pk = job_of(result).pk
    client.force_login(make_user("ops", superuser=True))

    client.post("/admin/jobs/job/", {"action": "cancel_selected", "_selected_action": [pk]})
    assert tasks.add.get_result(result.id).status == TaskResultStatus.FAILED
    client.post("/admin/jobs/job/", {"action": "retry_selected", "_selected_action": [pk]})
    run_worker()

    assert tasks.add.get_result(result.id).return_value == 5
    page = client.get(f"/admin/jobs/job/{pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "tests.taskapp.tasks.add" in text
    assert all(actor in text for actor in ("tasks:default", "admin:ops", "worker:")), text


def test_a_task_enqueued_after_others_reads_their_results(run_worker):
    from jobs.backends import enqueue_after

    first, second = tasks.add.enqueue(1, 2), tasks.add.enqueue(10, 20)
    total = enqueue_after([first, second.id], tasks.total_of_parents)

    assert job_of(total).status == JobStatus.WAITING
    run_worker()

    assert tasks.total_of_parents.get_result(total.id).return_value == 33
