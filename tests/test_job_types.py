"""Each built-in job type, run by a burst worker; webhook target refusal."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.test import override_settings

from jobs.handlers import JobContext, job_type
from jobs.handlers.echo import EchoPayload
from jobs.handlers.webhook import WebhookTargetRefused, check_target
from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def run(api, submit, run_worker, body: dict) -> dict:
    job = submit(body)
    run_worker()
    return api.get(f"/jobs/{job['job_id']}").json()


def test_echo_returns_its_payload(api, submit, run_worker):
    job = run(api, submit, run_worker, {"type": "echo", "payload": {"a": [1, 2], "b": "ü"}})

    assert (job["status"], job["result"], job["attempts"]) == ("succeeded", {"a": [1, 2], "b": "ü"}, 1)
    assert job["started_at"] <= job["finished_at"]


def test_sleep_sleeps(api, submit, run_worker):
    job = run(api, submit, run_worker, {"type": "sleep", "payload": {"seconds": 0.2}})

    assert job["status"] == "succeeded"
    assert job["result"] == {"slept": 0.2}


def test_job_over_its_timeout_fails_with_timeout_error(api, submit, run_worker):
    job = run(api, submit, run_worker, {"type": "sleep", "payload": {"seconds": 5}, "timeout": 1, "max_retries": 0})

    assert job["status"] == "failed"
    assert "JobTimeoutException" in job["error"]


def test_fail_fails_after_its_retries_with_traceback(api, submit, run_worker, no_backoff):
    job = run(api, submit, run_worker, {"type": "fail", "payload": {"message": "drill"}, "max_retries": 2})

    assert (job["status"], job["attempts"]) == ("failed", 3)
    assert job["error"].startswith("Traceback")
    assert job["error"].rstrip().endswith("DrillFailure: drill")


def test_email_is_sent_through_django_backend(api, submit, run_worker):
    job = run(
        api, submit, run_worker, {"type": "email", "payload": {"to": "ops@example.com", "subject": "Hi", "body": "B"}}
    )

    assert job["status"] == "succeeded"
    assert job["result"] == {"sent": 1, "to": ["ops@example.com"]}
    assert [(m.to, m.subject, m.body) for m in mail.outbox] == [(["ops@example.com"], "Hi", "B")]


def test_email_subject_with_newline_is_refused(api):
    response = api.post("/jobs", {"type": "email", "payload": {"to": "a@b.co", "subject": "x\nBcc: y"}}, format="json")

    assert response.status_code == 400
    assert "subject" in response.json()["payload"]


class Receiver(BaseHTTPRequestHandler):
    received: list = []
    redirect_to: str | None = None
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"] or 0))
        Receiver.received.append((self.path, json.loads(body or b"null"), self.headers.get("X-Sentinelflow-Job")))
        if Receiver.redirect_to:
            self.send_response(302)
            self.send_header("Location", Receiver.redirect_to)
        else:
            self.send_response(Receiver.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.received, Receiver.redirect_to, Receiver.status = [], None, 200
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_webhook_posts_body_when_private_targets_are_allowed(api, submit, run_worker, receiver, settings):
    settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE = True

    job = run(api, submit, run_worker, {"type": "webhook", "payload": {"url": f"{receiver}/hook", "body": {"k": 1}}})

    assert job["status"] == "succeeded"
    assert job["result"] == {"status_code": 200, "body": "ok"}
    assert Receiver.received == [("/hook", {"k": 1}, job["job_id"])]


def test_webhook_non_2xx_answer_fails_the_attempt(api, submit, run_worker, receiver, settings):
    settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE = True
    Receiver.status = 500

    job = run(api, submit, run_worker, {"type": "webhook", "payload": {"url": receiver}, "max_retries": 0})

    assert job["status"] == "failed"
    assert "webhook answered 500" in job["error"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:8000/",
        "http://[::ffff:127.0.0.1]/",
        "ftp://example.com/file",
    ],
)
def test_webhook_to_private_or_odd_target_is_refused_at_submit(api, url):
    response = api.post("/jobs", {"type": "webhook", "payload": {"url": url}}, format="json")

    assert response.status_code == 400
    assert "url" in response.json()["payload"]


def test_webhook_host_resolving_to_loopback_fails_at_run_without_retry(api, submit, run_worker, monkeypatch):
    real_getaddrinfo = socket.getaddrinfo

    def fake_dns(host, *args, **kwargs):
        if host == "hooks.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)

    job = run(api, submit, run_worker, {"type": "webhook", "payload": {"url": "http://hooks.example.com/x"}})

    assert (job["status"], job["attempts"]) == ("failed", 1)
    assert "WebhookTargetRefused" in job["error"]


def test_check_target_refuses_metadata_and_loopback_hosts(receiver):
    for url in ("http://169.254.169.254/latest", receiver, "http://localhost/"):
        with pytest.raises(WebhookTargetRefused):
            check_target(url)


def test_webhook_follows_redirect_only_to_checked_targets(api, submit, run_worker, receiver, monkeypatch, settings):
    from jobs.handlers import webhook

    settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE = False
    Receiver.redirect_to = "http://10.0.0.5/internal"
    checked = []

    def check_all_but_receiver(url):
        checked.append(url)
        with override_settings(SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE=url.startswith(receiver)):
            return check_target(url)

    monkeypatch.setattr(webhook, "check_target", check_all_but_receiver)
    job = submit({"type": "webhook", "payload": {"url": "https://hooks.example.com/"}})
    # The receiver is on loopback, which submit refuses: point the stored job at it directly.
    Job.objects.filter(job_id=job["job_id"]).update(payload={"url": f"{receiver}/start", "body": None, "headers": {}})
    run_worker()

    job = api.get(f"/jobs/{job['job_id']}").json()
    assert job["status"] == "failed"
    assert "10.0.0.5" in job["error"]
    assert checked == [f"{receiver}/start", "http://10.0.0.5/internal"]


def test_new_job_types_register_with_a_decorator(api, submit, run_worker):
    @job_type("shout", payload_serializer=EchoPayload)
    def shout(payload: dict, context: JobContext) -> str:
        return str(payload.get("text", "")).upper()

    try:
        job = run(api, submit, run_worker, {"type": "shout", "payload": {"text": "hey"}})
    finally:
        from jobs.handlers import REGISTRY

        REGISTRY.pop("shout")
    assert (job["status"], job["result"]) == ("succeeded", "HEY")
