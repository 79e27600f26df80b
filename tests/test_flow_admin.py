"""Job types and queues in the admin: pause/resume actions (audited), limits edited with their override boxes."""

from __future__ import annotations

import pytest

from jobs import services
from jobs.models import AuditEntry, JobTypeSettings, QueueState
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)

TYPES_URL = "/admin/jobs/jobtypesettings/"
QUEUES_URL = "/admin/jobs/queuestate/"


@pytest.fixture(autouse=True)
def _fresh_flow_state():
    services.forget_flow_state()
    yield
    services.forget_flow_state()


@pytest.fixture
def operator(client):
    client.force_login(
        make_user("op", "view_jobtypesettings", "change_jobtypesettings", "view_queuestate", "change_queuestate")
    )
    return client


def test_job_types_list_every_registered_type(operator):
    page = operator.get(TYPES_URL).content.decode()
    for name in ("echo", "sleep", "fail"):
        assert f">{name}<" in page
    assert set(JobTypeSettings.objects.values_list("name", flat=True)) >= {"echo", "sleep", "fail"}


def test_pause_and_resume_job_types_are_audited(operator):
    operator.get(TYPES_URL)
    pk = JobTypeSettings.objects.get(name="echo").pk
    response = operator.post(TYPES_URL, {"action": "pause_selected", "_selected_action": [pk]}, follow=True)
    assert "Paused 1 job type(s)." in response.content.decode()
    assert services.flow_state(fresh=True).policy_for("echo").paused
    operator.post(TYPES_URL, {"action": "resume_selected", "_selected_action": [pk]})
    assert services.flow_state(fresh=True).policy_for("echo") is None
    events = list(AuditEntry.objects.filter(target="echo").values_list("actor", "action"))
    assert events == [("admin:op", "type.resume"), ("admin:op", "type.pause")]


def test_limits_apply_only_with_their_override_box(operator):
    operator.get(TYPES_URL)
    row = JobTypeSettings.objects.get(name="echo")
    url = f"{TYPES_URL}{row.pk}/change/"
    form = {"max_concurrency_overridden": "on", "max_concurrency": "2", "rate": "5/s"}
    assert operator.post(url, form).status_code == 302
    policy = services.flow_state(fresh=True).policy_for("echo")
    assert policy.max_concurrency == 2 and policy.rate is None  # the rate's box was not ticked
    bad = operator.post(url, {**form, "rate_overridden": "on", "rate": "lots"})
    assert bad.status_code == 200 and "A rate is a count" in bad.content.decode()
    assert JobTypeSettings.objects.get(name="echo").rate is None
    operator.post(url, {"max_concurrency": "2"})  # the box unticked: back to the declared limit
    assert services.flow_state(fresh=True).policy_for("echo") is None


def test_queue_pause_and_resume_buttons(operator):
    operator.get(QUEUES_URL)
    pk = QueueState.objects.get(name="default").pk
    response = operator.post(QUEUES_URL, {"action": "pause_selected", "_selected_action": [pk]}, follow=True)
    assert "Paused 1 queue(s)." in response.content.decode()
    assert services.flow_state(fresh=True).paused_queues == {"default"}
    operator.post(QUEUES_URL, {"action": "resume_selected", "_selected_action": [pk]})
    assert services.flow_state(fresh=True).paused_queues == set()
    assert list(AuditEntry.objects.filter(target="default").values_list("action", flat=True)) == [
        "queue.resume",
        "queue.pause",
    ]


def test_viewers_cannot_pause(client):
    client.force_login(make_user("viewer", "view_jobtypesettings", "view_queuestate"))
    client.get(QUEUES_URL)
    pk = QueueState.objects.get(name="default").pk
    client.post(QUEUES_URL, {"action": "pause_selected", "_selected_action": [pk]})
    assert not QueueState.objects.filter(paused=True).exists() and not AuditEntry.objects.exists()
