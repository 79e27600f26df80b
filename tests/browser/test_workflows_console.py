"""Workflows in the operator console, in a real browser: the graph, a node's page, cancel and retry failed."""

from __future__ import annotations

import pytest

from jobs.models import Job

from .conftest import shot

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def post_workflow(api):
    def post(nodes: list[dict]) -> dict:
        response = api.post("/workflows", {"nodes": nodes}, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    return post


def test_the_graph_shows_each_node_and_links_to_its_job(logged_in, live_server, post_workflow, run_worker, no_backoff):
    created = post_workflow(
        [
            {"name": "fetch", "type": "echo"},
            {"name": "resize", "type": "fail", "max_retries": 0, "after": ["fetch"]},
            {"name": "publish", "type": "echo", "after": ["resize"]},
            {"name": "report", "type": "gather", "after": ["resize"], "run_if": "finished"},
        ]
    )
    run_worker()
    page = logged_in

    page.goto(f"{live_server.url}/admin/jobs/workflow/{created['workflow_id']}/change/")

    nodes = page.locator("svg.sf-workflow-graph a.sf-node")
    assert nodes.count() == 4
    states = {nodes.nth(i).get_attribute("data-node"): nodes.nth(i).get_attribute("data-status") for i in range(4)}
    assert states == {"fetch": "succeeded", "resize": "failed", "publish": "cancelled", "report": "succeeded"}
    box = page.locator("svg.sf-workflow-graph").bounding_box()
    assert box is not None and box["width"] > 300  # three columns drawn
    shot(page, "workflow-graph")

    page.locator("svg.sf-workflow-graph a.sf-node[data-node='resize']").click()
    page.wait_for_selector("text=parents and children")
    assert "fail job raised on purpose" in page.content()
    assert page.locator("a:has-text('publish')").count() >= 1  # its children are linked

    Job.objects.filter(node="resize").update(type="echo")  # fixed; now retry the failed nodes
    page.goto(f"{live_server.url}/admin/jobs/workflow/{created['workflow_id']}/change/")
    page.click("#sf-workflow-retry")
    page.wait_for_selector("text=Retried 2 node(s).")
    run_worker()
    page.reload()
    statuses = page.locator("svg.sf-workflow-graph a.sf-node").evaluate_all("els => els.map(e => e.dataset.status)")
    assert set(statuses) == {"succeeded"}


def test_cancel_from_the_page(logged_in, live_server, post_workflow):
    created = post_workflow([{"name": "a", "type": "echo"}, {"name": "b", "type": "echo", "after": ["a"]}])
    page = logged_in
    page.goto(f"{live_server.url}/admin/jobs/workflow/{created['workflow_id']}/change/")

    page.click("#sf-workflow-cancel")

    page.wait_for_selector("text=Cancelled 2 node(s).")
    assert set(Job.objects.values_list("status", flat=True)) == {"cancelled"}
