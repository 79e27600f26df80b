"""Workflows in the admin: the graph drawn on the server, each node linked, cancel and retry failed; a job's
parents and children."""

from __future__ import annotations

import pytest

from jobs import services
from jobs.models import Job, Workflow
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def make_workflow() -> Workflow:
    nodes = [
        {"name": "fetch", "type": "echo", "payload": {}},
        {"name": "<b>x</b>", "type": "echo", "payload": {}, "after": ["fetch"]},
        {"name": "notify", "type": "echo", "payload": {}, "after": ["fetch", "<b>x</b>"]},
    ]
    workflow, _jobs = services.workflow_submit(nodes=nodes, submitted_by="test")
    return workflow


@pytest.fixture
def operator(client):
    client.force_login(make_user("op", "view_job", "view_workflow", "cancel_job", "retry_job"))
    return client


def test_the_workflow_page_draws_the_graph_with_links(operator):
    workflow = make_workflow()

    page = operator.get(f"/admin/jobs/workflow/{workflow.workflow_id}/change/").content.decode()

    graph = page.split('class="sf-workflow-graph"', 1)[1].split("</svg>", 1)[0]
    assert graph.count('class="sf-node"') == 3
    assert "<script" not in graph and "http" not in graph  # drawn here: nothing fetched from elsewhere
    assert "&lt;b&gt;x&lt;/b&gt;" in graph and "<b>x</b>" not in page  # node names are escaped
    fetch = Job.objects.get(node="fetch")
    assert f'href="/admin/jobs/job/{fetch.pk}/change/"' in graph
    assert graph.count("<path ") == 3  # fetch -> x, fetch -> notify, x -> notify
    assert 'data-status="queued"' in graph and 'data-status="waiting"' in graph
    assert 'id="sf-workflow-cancel"' in page and 'id="sf-workflow-retry"' in page


def test_cancel_and_retry_from_the_page(operator):
    workflow = make_workflow()

    response = operator.post(f"/admin/jobs/workflow/{workflow.pk}/cancel/")

    assert response.status_code == 302
    assert set(Job.objects.values_list("status", flat=True)) == {"cancelled"}
    operator.post(f"/admin/jobs/workflow/{workflow.pk}/retry/")
    assert sorted(Job.objects.values_list("node", "status")) == [
        ("<b>x</b>", "waiting"),
        ("fetch", "queued"),
        ("notify", "waiting"),
    ]


def test_the_actions_need_post_and_the_permissions(client):
    workflow = make_workflow()
    client.force_login(make_user("viewer", "view_job", "view_workflow"))

    page = client.get(f"/admin/jobs/workflow/{workflow.pk}/change/").content.decode()
    assert "sf-workflow-cancel" not in page
    assert client.post(f"/admin/jobs/workflow/{workflow.pk}/cancel/").status_code == 403
    assert client.get(f"/admin/jobs/workflow/{workflow.pk}/cancel/").status_code == 405
    assert set(Job.objects.values_list("status", flat=True)) == {"queued", "waiting"}


def test_a_job_page_lists_its_parents_and_children(operator):
    make_workflow()
    middle = Job.objects.get(node="<b>x</b>")

    page = operator.get(f"/admin/jobs/job/{middle.pk}/change/").content.decode()

    assert f"/admin/jobs/job/{Job.objects.get(node='fetch').pk}/change/" in page
    assert f"/admin/jobs/job/{Job.objects.get(node='notify').pk}/change/" in page
    assert "node &lt;b&gt;x&lt;/b&gt;" in page
