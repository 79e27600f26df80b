"""The one audit log (AuditEntry) in the admin: a queue's pause and a bulk cancel in the same list, its filter and
search, and that nobody adds, changes or deletes an entry (a superuser neither)."""

from __future__ import annotations

import pytest

from jobs import services
from jobs.models import AuditEntry, Job, JobStatus, QueueState
from tests.factories import make_jobs, make_user

pytestmark = pytest.mark.django_db(transaction=True)

AUDIT_URL = "/admin/jobs/auditentry/"


@pytest.fixture(autouse=True)
def _fresh_flow_state():
    services.forget_flow_state()
    yield
    services.forget_flow_state()


@pytest.fixture
def superuser(client):
    client.force_login(make_user("root", superuser=True))
    return client


def result_table(response) -> str:
    """The changelist's rows only (the action filter in the sidebar names actions too)."""
    page = response.content.decode()
    start = page.index('<table id="result_list">')
    return page[start : page.index("</table>", start)]


def pause_queue_and_bulk_cancel(client) -> None:
    """Both through the admin, as an operator would: the queue's pause action, then Cancel over "all matching"."""
    client.get("/admin/jobs/queuestate/")  # creates the configured queues' rows
    queue = QueueState.objects.get(name="default")
    paused = client.post(
        "/admin/jobs/queuestate/", {"action": "pause_selected", "_selected_action": [queue.pk]}, follow=True
    )
    assert "Paused 1 queue(s)." in paused.content.decode()
    jobs = make_jobs(2, status=JobStatus.QUEUED, tags=["nightly"])
    data = {"action": "cancel_selected", "select_across": "1", "index": "0", "_selected_action": [str(jobs[0].pk)]}
    cancelled = client.post("/admin/jobs/job/?q=tag%3Anightly", data, follow=True)
    assert "Cancelled 2 job(s)." in cancelled.content.decode()


def test_a_queue_pause_and_a_bulk_cancel_are_in_the_same_audit_list(superuser):
    pause_queue_and_bulk_cancel(superuser)

    response = superuser.get(AUDIT_URL)

    assert response.status_code == 200
    rows = [(entry.action, entry.target, entry.actor) for entry in response.context["cl"].result_list]
    assert rows == [("jobs.bulk_cancel", "", "admin:root"), ("queue.pause", "default", "admin:root")]
    table = result_table(response)
    assert "jobs.bulk_cancel" in table and "queue.pause" in table and ">default<" in table
    assert Job.objects.filter(status=JobStatus.CANCELLED).count() == 2
    assert AuditEntry.objects.get(action="queue.pause").detail == {"was_paused": False}


def test_the_list_filters_by_action_and_searches_the_target(superuser):
    pause_queue_and_bulk_cancel(superuser)

    by_action = superuser.get(AUDIT_URL, {"action": "jobs.bulk_cancel"}).context["cl"].result_list
    assert [entry.action for entry in by_action] == ["jobs.bulk_cancel"]
    by_target = superuser.get(AUDIT_URL, {"q": "default"}).context["cl"].result_list
    assert [entry.action for entry in by_target] == ["queue.pause"]
    by_actor = superuser.get(AUDIT_URL, {"q": "admin:root"}).context["cl"].result_list
    assert len(by_actor) == 2


def test_entries_cannot_be_added_changed_or_deleted_even_by_a_superuser(superuser):
    services.queue_set_paused(name="default", paused=True, actor="api-key:ops")
    entry = AuditEntry.objects.get()

    assert superuser.get(f"{AUDIT_URL}add/").status_code == 403
    assert superuser.post(f"{AUDIT_URL}add/", {"actor": "forged", "action": "queue.resume"}).status_code == 403
    # The change page shows the entry read-only; a POST to it changes nothing.
    page = superuser.get(f"{AUDIT_URL}{entry.pk}/change/")
    assert page.status_code == 200 and 'name="actor"' not in page.content.decode()
    superuser.post(f"{AUDIT_URL}{entry.pk}/change/", {"actor": "forged", "action": "queue.resume", "target": "x"})
    assert superuser.post(f"{AUDIT_URL}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    listing = superuser.get(AUDIT_URL)
    assert "delete_selected" not in listing.content.decode()
    superuser.post(AUDIT_URL, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert list(AuditEntry.objects.values_list("actor", "action", "target")) == [
        ("api-key:ops", "queue.pause", "default")
    ]


def test_reading_the_audit_log_needs_view_job(client):
    services.queue_set_paused(name="default", paused=True, actor="api-key:ops")
    # Pausing queues does not by itself let one read the log: it holds bulk actions' filters over every job.
    client.force_login(make_user("pauser", "view_queuestate", "change_queuestate"))
    assert client.get(AUDIT_URL).status_code == 403
    client.force_login(make_user("viewer", "view_job"))
    response = client.get(AUDIT_URL)
    assert response.status_code == 200
    assert [entry.action for entry in response.context["cl"].result_list] == ["queue.pause"]


def test_an_actor_with_the_longest_username_is_recorded_whole():
    # "admin:" + a 150-character username (Django's limit): the pause and its entry are not lost to the column's size.
    actor = "admin:" + "u" * 150
    services.queue_set_paused(name="default", paused=True, actor=actor)
    assert AuditEntry.objects.get().actor == actor
    assert QueueState.objects.get(name="default").paused
