"""Attacks on the webhook job type: DNS rebinding, IPv6 forms of private IPv4, credentials on redirects.

Nothing here sends traffic beyond loopback: "public" DNS answers come from a resolver stub, and
connections to anything but loopback are recorded and refused at the socket.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC_ADDRESS = "93.184.216.34"  # what the stub answers first; never actually connected to


class Internal(BaseHTTPRequestHandler):
    """The stand-in for an internal service (or a receiver, when private targets are allowed)."""

    requests: list[dict] = []
    answers: list[tuple[int, dict[str, str]]] = []

    def _record(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Internal.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        status, headers = Internal.answers.pop(0) if Internal.answers else (200, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "13")
        self.end_headers()
        self.wfile.write(b"internal-data")

    do_GET = do_POST = _record

    def log_message(self, *args):
        pass


@pytest.fixture
def internal():
    Internal.requests, Internal.answers = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Internal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    server.server_close()


class StubResolver:
    """dns["name"] = [answers...]: each lookup of name takes the next answer (the last one repeats)."""

    def __init__(self, real_getaddrinfo):
        self.zones: dict[str, list[str]] = {}
        self.lookups: list[str] = []
        self.real_getaddrinfo = real_getaddrinfo

    def __setitem__(self, name: str, answers: list[str]) -> None:
        self.zones[name] = list(answers)

    def getaddrinfo(self, host, port, *args, **kwargs):
        if host not in self.zones:
            return self.real_getaddrinfo(host, port, *args, **kwargs)
        self.lookups.append(host)
        answers = self.zones[host]
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]


@pytest.fixture
def dns(monkeypatch) -> StubResolver:
    resolver = StubResolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", resolver.getaddrinfo)
    return resolver


@pytest.fixture
def connections(monkeypatch):
    """Every address a socket connects to; anything but loopback is refused without leaving the host."""
    seen: list[str] = []
    real_connect = socket.socket.connect

    def connect(self, address):
        seen.append(address[0])
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise ConnectionRefusedError(f"test: no traffic to {address[0]}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


def run_job(api, submit, run_worker, payload: dict) -> dict:
    job = submit({"type": "webhook", "payload": payload, "max_retries": 0})
    run_worker()
    return api.get(f"/jobs/{job['job_id']}").json()


def test_dns_rebinding_to_loopback_never_reaches_the_internal_server(
    api, submit, run_worker, internal, dns, connections
):
    # First answer public (passes the check), every later answer the internal server's address.
    dns["rebind.example"] = [PUBLIC_ADDRESS, "127.0.0.1"]

    job = run_job(api, submit, run_worker, {"url": f"http://rebind.example:{internal}/hook", "body": {"a": 1}})

    assert Internal.requests == []
    assert connections == [PUBLIC_ADDRESS]  # the checked address, and nothing else
    assert dns.lookups == ["rebind.example"]  # resolved once
    assert job["status"] == "failed"
    assert "internal-data" not in json.dumps(job)


def test_host_resolving_to_any_private_address_is_refused(api, submit, run_worker, internal, monkeypatch, connections):
    real_getaddrinfo = socket.getaddrinfo

    def two_answers(host, port, *args, **kwargs):
        if host == "mixed.example":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_ADDRESS, port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            ]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)

    job = run_job(api, submit, run_worker, {"url": f"http://mixed.example:{internal}/"})

    assert (job["status"], Internal.requests, connections) == ("failed", [], [])
    assert "WebhookTargetRefused" in job["error"]


def test_pinned_request_names_the_host_in_the_host_header(api, submit, run_worker, internal, dns, settings):
    settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE = True
    dns["hooks.example"] = ["127.0.0.1"]

    job = run_job(api, submit, run_worker, {"url": f"http://hooks.example:{internal}/in?x=1", "body": {"k": 1}})

    assert job["status"] == "succeeded", job["error"]
    [request] = Internal.requests
    assert (request["path"], request["headers"]["Host"], json.loads(request["body"])) == (
        "/in?x=1",
        f"hooks.example:{internal}",
        {"k": 1},
    )


def test_rebinding_on_a_redirect_hop_is_pinned_too(api, submit, run_worker, internal, dns, connections, monkeypatch):
    from jobs.handlers import webhook

    # The stand-in plays a public receiver (127.0.0.1 counts as public here) that redirects to a
    # name answering a public address first and another loopback address, 127.0.0.2, after.
    real_is_public = webhook.is_public_address
    monkeypatch.setattr(webhook, "is_public_address", lambda address: address == "127.0.0.1" or real_is_public(address))
    dns["first.example"] = ["127.0.0.1"]
    dns["rebind.example"] = [PUBLIC_ADDRESS, "127.0.0.2"]
    Internal.answers = [(302, {"Location": f"http://rebind.example:{internal}/second"})]

    job = run_job(api, submit, run_worker, {"url": f"http://first.example:{internal}/first"})

    assert [request["path"] for request in Internal.requests] == ["/first"]
    assert connections == ["127.0.0.1", PUBLIC_ADDRESS]
    assert job["status"] == "failed"


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[64:ff9b:1::a00:5]/",  # local-use NAT64 prefix
        "http://[::a9fe:a9fe]/",  # IPv4-compatible 169.254.169.254
        "http://[::ffff:a00:1]/",  # IPv4-mapped 10.0.0.1
        "http://[::ffff:0:a9fe:a9fe]/",  # IPv4-translated 169.254.169.254
        "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
        "http://[2002:c0a8:1::1]/",  # 6to4 of 192.168.0.1
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",  # Teredo, client 10.0.0.1
    ],
)
def test_ipv6_forms_of_private_ipv4_are_refused_at_submit(api, url):
    response = api.post("/jobs", {"type": "webhook", "payload": {"url": url}}, format="json")

    assert response.status_code == 400, response.content
    assert "url" in response.json()["payload"]
    assert not Job.objects.exists()


def test_ipv6_form_of_private_ipv4_in_dns_is_refused_at_run(api, submit, run_worker, dns, connections):
    dns["nat64.example"] = ["64:ff9b::a9fe:a9fe"]

    job = run_job(api, submit, run_worker, {"url": "http://nat64.example/latest/meta-data"})

    assert (job["status"], connections) == ("failed", [])
    assert "WebhookTargetRefused" in job["error"]


@pytest.mark.parametrize("address", ["64:ff9b::5db8:d822", "2002:5db8:d822::1", "2606:4700::1111"])
def test_ipv6_forms_of_public_ipv4_stay_allowed(address):
    from jobs.handlers.webhook import is_public_address

    assert is_public_address(address)


SECRET_HEADERS = {"Authorization": "Bearer s3cret", "Cookie": "session=s3cret", "X-Custom": "s3cret"}


def redirect_job(api, submit, run_worker, dns, settings, *, status: int, location: str, port: int) -> dict:
    settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE = True
    dns["first.example"] = ["127.0.0.1"]
    dns["other.example"] = ["127.0.0.1"]
    Internal.answers = [(status, {"Location": location})]
    payload = {"url": f"http://first.example:{port}/first", "body": {"token": "s3cret"}, "headers": SECRET_HEADERS}
    return run_job(api, submit, run_worker, payload)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_host_gets_no_credentials_and_no_body(
    api, submit, run_worker, internal, dns, settings, status
):
    location = f"http://other.example:{internal}/second"

    job = redirect_job(api, submit, run_worker, dns, settings, status=status, location=location, port=internal)

    assert job["status"] == "succeeded", job["error"]
    first, second = Internal.requests
    assert first["headers"]["Authorization"] == "Bearer s3cret" and json.loads(first["body"]) == {"token": "s3cret"}
    assert second["path"] == "/second"
    assert second["headers"]["Host"] == f"other.example:{internal}"
    assert not {"Authorization", "Cookie", "X-Custom"} & set(second["headers"])
    assert second["body"] == b""
    assert second["headers"]["X-Sentinelflow-Job"] == job["job_id"]


def test_redirect_to_another_port_gets_no_credentials(api, submit, run_worker, internal, dns, settings):
    other = ThreadingHTTPServer(("127.0.0.1", 0), Internal)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        location = f"http://first.example:{other.server_port}/second"
        job = redirect_job(api, submit, run_worker, dns, settings, status=307, location=location, port=internal)
    finally:
        other.shutdown()
        other.server_close()

    assert job["status"] == "succeeded", job["error"]
    second = Internal.requests[1]
    assert not {"Authorization", "Cookie", "X-Custom"} & set(second["headers"])
    assert second["body"] == b""


def test_303_becomes_a_get_without_body(api, submit, run_worker, internal, dns, settings):
    location = f"http://first.example:{internal}/second"

    job = redirect_job(api, submit, run_worker, dns, settings, status=303, location=location, port=internal)

    assert job["status"] == "succeeded", job["error"]
    second = Internal.requests[1]
    assert (second["method"], second["body"]) == ("GET", b"")
    assert "Content-Type" not in second["headers"]
    assert second["headers"]["Authorization"] == "Bearer s3cret"  # same origin: the headers stay


def test_307_on_the_same_origin_repeats_the_post_with_headers_and_body(
    api, submit, run_worker, internal, dns, settings
):
    location = "/second"

    job = redirect_job(api, submit, run_worker, dns, settings, status=307, location=location, port=internal)

    assert job["status"] == "succeeded", job["error"]
    second = Internal.requests[1]
    assert (second["method"], json.loads(second["body"])) == ("POST", {"token": "s3cret"})
    assert second["headers"]["Authorization"] == "Bearer s3cret"


@pytest.fixture
def tls_receiver(tmp_path, monkeypatch):
    """An https stand-in on 127.0.0.1 with a self-signed certificate for hooks.test, trusted for this test."""
    import ssl
    import subprocess

    from jobs.handlers import webhook

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert)),
            *("-subj", "/CN=hooks.test", "-addext", "subjectAltName=DNS:hooks.test"),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setattr(webhook.certifi, "where", lambda: str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server_names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    Internal.requests, Internal.answers = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Internal)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port, server_names
    server.shutdown()
    server.server_close()


def test_pinned_https_request_sends_sni_and_checks_the_certificate_for_the_host_name(
    api, submit, run_worker, dns, settings, tls_receiver
):
    settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE = True
    port, server_names = tls_receiver
    dns["hooks.test"] = ["127.0.0.1"]
    dns["other.test"] = ["127.0.0.1"]

    good = run_job(api, submit, run_worker, {"url": f"https://hooks.test:{port}/in"})
    bad = run_job(api, submit, run_worker, {"url": f"https://other.test:{port}/in"})

    assert good["status"] == "succeeded", good["error"]
    assert server_names[0] == "hooks.test"
    assert Internal.requests[0]["headers"]["Host"] == f"hooks.test:{port}"
    assert bad["status"] == "failed"
    assert "doesn't match" in bad["error"] or "CERTIFICATE_VERIFY_FAILED" in bad["error"]
    assert len(Internal.requests) == 1
