"""Workflows and dependencies through the API, run by the product's burst worker (fakeredis, the test database)."""

from __future__ import annotations

import uuid

import pytest

from jobs import services
from jobs.models import Job, JobDependency, JobEvent, JobStatus, Workflow
from jobs.services import dependencies

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def workflow(api):
    def post(nodes: list[dict], expect: int = 201) -> dict:
        response = api.post("/workflows", {"nodes": nodes}, format="json")
        assert response.status_code == expect, response.content
        return response.json()

    return post


def node(name: str, after: list[str] | None = None, type: str = "echo", **fields) -> dict:
    body = {"name": name, "type": type, "payload": fields.pop("payload", {"node": name}), **fields}
    if after is not None:
        body["after"] = after
    return body


def status_of(job_id: str) -> str:
    return Job.objects.get(job_id=job_id).status


def test_a_chain_runs_in_order_and_passes_results_on(workflow, api, run_worker):
    created = workflow([node("fetch"), node("transform", ["fetch"], "gather"), node("notify", ["transform"], "gather")])

    assert created["status"] == "running"
    assert {name: job["status"] for name, job in created["jobs"].items()} == {
        "fetch": "queued",
        "transform": "waiting",
        "notify": "waiting",
    }
    run_worker()

    body = api.get(f"/workflows/{created['workflow_id']}").json()
    assert body["status"] == "succeeded"
    assert body["progress"] == 1.0
    assert body["counts"] == {"succeeded": 3}
    notify = body["jobs"]["notify"]
    assert notify["after"] == ["transform"]
    assert notify["result"]["parents"] == {
        "transform": {"parents": {"fetch": {"node": "fetch"}}, "count": 1, "payload": {"node": "transform"}}
    }
    jobs = {name: Job.objects.get(job_id=job["job_id"]) for name, job in body["jobs"].items()}
    assert jobs["fetch"].finished_at <= jobs["transform"].started_at
    assert jobs["transform"].finished_at <= jobs["notify"].started_at


def test_a_fan_in_sees_every_result(workflow, api, run_worker):
    nodes = [node(f"part-{index}", payload={"index": index}) for index in range(100)]
    nodes.append(node("album", [f"part-{index}" for index in range(100)], "gather", run_if="finished"))
    created = workflow(nodes)
    run_worker()

    album = api.get(f"/workflows/{created['workflow_id']}").json()["jobs"]["album"]
    assert album["status"] == "succeeded"
    assert album["result"]["count"] == 100
    assert album["result"]["parents"] == {f"part-{index}": {"index": index} for index in range(100)}


def test_a_failed_parent_cancels_its_dependents_and_allow_failure_runs_one(workflow, api, run_worker, no_backoff):
    created = workflow(
        [
            node("broken", type="fail", payload={}, max_retries=0),
            node("next", ["broken"]),
            node("after-next", ["next"]),
            node("cleanup", ["broken"], "gather", run_if="finished"),
        ]
    )
    run_worker()

    body = api.get(f"/workflows/{created['workflow_id']}").json()
    statuses = {name: job["status"] for name, job in body["jobs"].items()}
    assert statuses == {"broken": "failed", "next": "cancelled", "after-next": "cancelled", "cleanup": "succeeded"}
    assert "parent 'broken' failed" in body["jobs"]["next"]["error"]
    assert "parent 'next' cancelled" in body["jobs"]["after-next"]["error"]
    assert body["status"] == "failed"
    assert Workflow.objects.get().outcome == "failed"


def test_retry_failed_runs_the_failed_node_and_then_its_dependents(workflow, api, run_worker, no_backoff):
    created = workflow([node("flaky", type="fail", payload={}, max_retries=0), node("next", ["flaky"])])
    run_worker()
    flaky = Job.objects.get(job_id=created["jobs"]["flaky"]["job_id"])
    Job.objects.filter(pk=flaky.pk).update(type="echo")  # "fixed" before the retry

    response = api.post(f"/workflows/{created['workflow_id']}/retry")

    assert response.status_code == 202
    assert {name: job["status"] for name, job in response.json()["jobs"].items()} == {
        "flaky": "queued",
        "next": "waiting",
    }
    run_worker()
    assert api.get(f"/workflows/{created['workflow_id']}").json()["status"] == "succeeded"


def test_cancel_cancels_what_has_not_finished(workflow, api):
    created = workflow([node("a"), node("b", ["a"]), node("c", ["b"])])

    response = api.post(f"/workflows/{created['workflow_id']}/cancel")

    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["counts"] == {"cancelled": 3}


def test_depends_on_waits_for_existing_jobs_and_a_late_dependent_of_a_failure_is_born_cancelled(
    submit, api, run_worker, no_backoff
):
    parent = submit({"type": "echo", "payload": {"x": 1}})
    child = submit({"type": "gather", "depends_on": [parent["job_id"]]})
    assert child["status"] == "waiting"
    run_worker()
    assert api.get(f"/jobs/{child['job_id']}").json()["result"]["parents"] == {parent["job_id"]: {"x": 1}}

    broken = submit({"type": "fail", "max_retries": 0})
    run_worker()
    late = submit({"type": "echo", "depends_on": [broken["job_id"]]})
    tolerant = submit({"type": "echo", "depends_on": [broken["job_id"]], "allow_failure": True})
    assert late["status"] == "cancelled"
    assert broken["job_id"] in late["error"]
    assert tolerant["status"] == "queued"


def test_a_batch_item_may_depend_on_a_job(submit, api):
    parent = submit({"type": "echo"})
    response = api.post(
        "/jobs/batch", {"jobs": [{"type": "echo"}, {"type": "echo", "depends_on": [parent["job_id"]]}]}, format="json"
    )
    assert response.status_code == 201
    assert [job["status"] for job in response.json()["jobs"]] == ["queued", "waiting"]


def test_manual_retry_of_a_dependent_waits_for_a_retried_parent_and_is_refused_before(submit, api, run_worker):
    parent = submit({"type": "fail", "max_retries": 0})
    run_worker()
    child = submit({"type": "echo", "depends_on": [parent["job_id"]]})
    assert child["status"] == "cancelled"

    refused = api.post(f"/jobs/{child['job_id']}/retry")
    assert refused.status_code == 409
    assert "retry it first" in refused.json()["detail"]

    Job.objects.filter(job_id=parent["job_id"]).update(type="echo")
    assert api.post(f"/jobs/{parent['job_id']}/retry").status_code == 202
    assert api.post(f"/jobs/{child['job_id']}/retry").json()["status"] == "waiting"
    run_worker()
    assert status_of(child["job_id"]) == "succeeded"


@pytest.mark.parametrize(
    ("nodes", "where", "field", "says"),
    [
        ([node("a", ["b"]), node("b", ["a"])], "a", "after", "cycle: a -> b -> a"),
        ([node("a", ["a"])], "a", "after", "cycle: a -> a"),
        ([node("a", ["ghost"])], "a", "after", "Unknown node 'ghost'"),
        ([node("a"), node("a")], "a", "name", "Another node is named 'a'"),
        ([node("a"), node("b", type="nope")], "b", "type", "Unknown job type"),
        ([node("a", run_if="sometimes")], "a", "run_if", "succeeded, finished"),
        ([node("a", depends_on=[str(uuid.uuid4())])], "a", "depends_on", "Use after"),
        ([{"type": "echo"}], "#0", "name", "Use 1 to 64"),
        ([node("a</script>")], "#0", "name", "Use 1 to 64"),
    ],
)
def test_a_bad_workflow_is_a_400_naming_the_node_and_stores_nothing(workflow, nodes, where, field, says):
    body = workflow(nodes, expect=400)

    assert says in str(body["nodes"][where][field])
    assert not Job.objects.exists()
    assert not Workflow.objects.exists()


def test_a_workflow_has_at_most_1000_nodes(workflow):
    body = workflow([node(f"n{index}") for index in range(1001)], expect=400)
    assert "1000" in str(body["nodes"])
    assert not Job.objects.exists()


def test_unknown_parents_are_a_400_and_store_nothing(api, submit):
    parent = submit({"type": "echo"})
    ghost = str(uuid.uuid4())
    response = api.post("/jobs", {"type": "echo", "depends_on": [parent["job_id"], ghost]}, format="json")

    assert response.status_code == 400
    assert ghost in response.json()["detail"]
    assert Job.objects.count() == 1
    bad = api.post("/jobs", {"type": "echo", "depends_on": ["not-a-uuid"]}, format="json")
    assert bad.status_code == 400
    assert "depends_on" in bad.json()


def test_unknown_workflow_is_a_404_and_a_bad_wait_a_400(api, submit):
    assert api.get(f"/workflows/{uuid.uuid4()}").status_code == 404
    assert api.get("/workflows/not-a-uuid").status_code == 404
    job = submit({"type": "echo"})
    for wait in ("-1", "61", "nan", "soon"):
        response = api.get(f"/jobs/{job['job_id']}", {"wait": wait})
        assert response.status_code == 400
        assert "wait" in response.json()


def test_wait_answers_with_the_current_state_after_the_wait(api, submit):
    job = submit({"type": "echo"})
    body = api.get(f"/jobs/{job['job_id']}", {"wait": "0.2"}).json()
    assert body["status"] == "queued"


def test_writes_need_the_write_scope(anon):
    response = anon.post("/workflows", {"nodes": [node("a")]}, format="json")
    assert response.status_code in (401, 403)
    assert not Job.objects.exists()


def test_a_release_queues_each_dependent_once():
    parent = Job.objects.create(type="echo", timeout=60, status=JobStatus.SUCCEEDED)
    child = Job.objects.create(type="echo", timeout=60, status=JobStatus.WAITING)
    JobDependency.objects.create(child=child, parent=parent)

    first = dependencies.dependents_release(parent_pks=[parent.pk])
    second = dependencies.dependents_release(parent_pks=[parent.pk])

    assert [job.pk for job in first] == [child.pk]
    assert second == []
    assert JobEvent.objects.filter(job=child, to_status=JobStatus.QUEUED).count() == 1


def test_the_sentinel_releases_a_dependent_whose_release_was_lost(monkeypatch):
    parent = Job.objects.create(type="echo", timeout=60, status=JobStatus.STARTED, attempts=1)
    child = Job.objects.create(type="echo", timeout=60, status=JobStatus.WAITING)
    JobDependency.objects.create(child=child, parent=parent)
    # The process dies between the parent's outcome and the release of its dependents.
    monkeypatch.setattr(dependencies, "dependents_release", lambda **kwargs: None)
    services.job_succeed(job=parent, result={"ok": True})
    assert status_of(child.job_id) == JobStatus.WAITING
    monkeypatch.undo()

    assert services.waiting_repair() == 1
    assert status_of(child.job_id) == JobStatus.QUEUED
    assert services.waiting_repair() == 0


def test_progress_is_throttled_and_shown(submit, api):
    job = submit({"type": "echo"})
    report = services.ProgressReporter(Job.objects.get(job_id=job["job_id"]).pk)
    report(0.25, "a quarter")
    report(0.5, "half")  # within the interval: not written
    assert api.get(f"/jobs/{job['job_id']}").json()["progress"] == 0.25
    report(1.0, "done")  # the last one always lands
    body = api.get(f"/jobs/{job['job_id']}").json()
    assert (body["progress"], body["progress_message"]) == (1.0, "done")
    with pytest.raises(ValueError):
        report(float("nan"))


def test_workflow_metrics(workflow, run_worker, metric):
    workflow([node("a"), node("b", ["a"])])
    assert metric("workflows_started_total") == 1
    assert metric("jobs_waiting") == 1
    run_worker()
    assert metric("workflows_finished_total", outcome="succeeded") == 1
    assert metric("jobs_waiting") == 0


def test_an_anonymous_reader_may_not_hold_a_thread_with_wait(anon, submit):
    job = submit({"type": "echo"})
    response = anon.get(f"/jobs/{job['job_id']}", {"wait": "60"})
    assert response.status_code == 403
    assert "read scope" in response.json()["detail"]
    assert anon.get(f"/jobs/{job['job_id']}").status_code == 200


def test_edges_are_bounded(workflow):
    nodes = [node(f"n{index}") for index in range(150)]
    nodes += [node(f"m{index}", [f"n{other}" for other in range(150)]) for index in range(140)]
    body = workflow(nodes, expect=400)
    assert "At most 20000 edges" in str(body["nodes"])
    assert not Job.objects.exists()


def test_results_reach_readers_without_the_read_scope_redacted(anon, workflow, run_worker):
    created = workflow([node("secret", payload={"token": "s3cr3t"}), node("copy", ["secret"], "gather")])
    run_worker()
    body = anon.get(f"/workflows/{created['workflow_id']}").json()
    # (echo's payload is public by its type's declaration; results never are.)
    assert body["jobs"]["secret"]["result"] == body["jobs"]["copy"]["result"] == "[redacted]"
    assert "s3cr3t" not in str(anon.get(f"/jobs/{created['jobs']['copy']['job_id']}").json())


def test_a_sentinel_pass_releases_and_finishes_what_a_dead_process_left(workflow):
    from jobs.sentinel import Sentinel

    created = workflow([node("a"), node("b", ["a"])])
    a = Job.objects.get(job_id=created["jobs"]["a"]["job_id"])
    # a's outcome committed by a process that died before releasing b and finishing the workflow:
    Job.objects.filter(pk=a.pk).update(status=JobStatus.SUCCEEDED)

    report = Sentinel(sleep=lambda seconds: None).run_pass()

    assert report is not None and report.released == 1
    assert "released 1 waiting" in report.summary()
    assert status_of(created["jobs"]["b"]["job_id"]) == JobStatus.QUEUED
    Job.objects.filter(workflow_id=created["workflow_id"]).update(status=JobStatus.SUCCEEDED)
    Sentinel(sleep=lambda seconds: None).run_pass()
    assert Workflow.objects.get().outcome == "succeeded"
