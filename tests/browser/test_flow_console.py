"""Pausing in a real browser: a queue's and a job type's pause and resume actions, and the audit log."""

from __future__ import annotations

import pytest

from jobs import services
from jobs.models import AuditEntry, QueueState

pytestmark = pytest.mark.django_db(transaction=True)


def run_action(page, row_text: str, action: str) -> str:
    page.check(f"#result_list tr:has-text('{row_text}') input.action-select")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")
    return page.inner_text("ul.messagelist")


def test_pause_and_resume_a_queue_and_a_job_type(logged_in, live_server):
    page = logged_in
    services.forget_flow_state()
    page.goto(f"{live_server.url}/admin/jobs/queuestate/")
    assert "Paused 1 queue(s)." in run_action(page, "low", "pause_selected")
    assert QueueState.objects.get(name="low").paused
    assert services.flow_state(fresh=True).paused_queues == {"low"}
    assert "Resumed 1 queue(s)." in run_action(page, "low", "resume_selected")
    assert not QueueState.objects.get(name="low").paused

    page.goto(f"{live_server.url}/admin/jobs/jobtypesettings/")
    assert "Paused 1 job type(s)." in run_action(page, "sleep", "pause_selected")
    assert services.flow_state(fresh=True).policy_for("sleep").paused

    page.goto(f"{live_server.url}/admin/jobs/auditentry/")
    log = page.inner_text("#result_list")
    assert "type.pause" in log and "queue.pause" in log and "queue.resume" in log
    assert "sleep" in log and "low" in log
    assert list(AuditEntry.objects.values_list("action", "target")) == [
        ("type.pause", "sleep"),
        ("queue.resume", "low"),
        ("queue.pause", "low"),
    ]
    services.forget_flow_state()
