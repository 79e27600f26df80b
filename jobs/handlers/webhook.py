from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import certifi
import urllib3
from django.conf import settings
from rest_framework import serializers

from jobs.exceptions import PermanentJobError

from . import JobContext, job_type

MAX_REDIRECTS = 5
RESPONSE_EXCERPT_CHARS = 1000
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class WebhookTargetRefused(PermanentJobError):
    """The URL points at an address that webhooks may not reach."""


# IPv6 ranges that carry an IPv4 address in their last 32 bits: NAT64 (RFC 6052), IPv4-compatible
# (deprecated, RFC 4291) and IPv4-translated (RFC 2765). IPv4-mapped, 6to4 and Teredo are decoded by
# ipaddress itself. The local-use NAT64 prefix (RFC 8215) may embed the address anywhere: refused whole.
EMBEDS_IPV4_IN_LAST_32_BITS = [
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
]
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (NAT64, mapped, compatible, translated, 6to4, Teredo)."""
    found = []
    if ip.ipv4_mapped:
        found.append(ip.ipv4_mapped)
    if any(ip in network for network in EMBEDS_IPV4_IN_LAST_32_BITS):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour:
        found.append(ip.sixtofour)
    if ip.teredo:
        found.extend(ip.teredo)  # the Teredo server and the client's (de-obfuscated) address
    return found


def is_public_address(address: str) -> bool:
    """Whether a webhook may connect to `address`: globally routable, not multicast, and the same for
    every IPv4 address embedded in an IPv6 one (`64:ff9b::a9fe:a9fe` is 169.254.169.254 through NAT64)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in LOCAL_NAT64:
            return False
        embedded = embedded_ipv4(ip)
        if embedded:
            return all(v4.is_global and not v4.is_multicast for v4 in embedded)
    return ip.is_global and not ip.is_multicast


def host_and_port(parts: SplitResult) -> tuple[str, int]:
    """The ASCII (IDNA) host and the port, explicit or the scheme's; UnicodeError or ValueError when invalid."""
    return (parts.hostname or "").encode("idna").decode("ascii"), parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class Target:
    """Where one webhook request goes: the URL's parts and the one address that was checked."""

    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal: the TLS server name and the Host header's host
    port: int
    address: str
    host_header: str
    path: str


def check_target(url: str) -> Target:
    """Resolve the URL's host once and refuse it if ANY address is loopback, private, link-local or reserved.

    The request then connects to the checked address (see `send`), so a second DNS answer
    (rebinding) never decides where it goes. The address checks are skipped when
    WEBHOOK_ALLOW_PRIVATE=1 (for webhooks inside a private network); the pinning is not.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise WebhookTargetRefused(f"Only http and https URLs with a host are allowed: {url!r}")
    try:
        host, port = host_and_port(parts)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, ValueError) as error:
        raise WebhookTargetRefused(f"Cannot resolve {parts.hostname!r}: {error}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise WebhookTargetRefused(f"{parts.hostname!r} has no address")
    if not settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE:
        for address in addresses:
            if not is_public_address(address):
                raise WebhookTargetRefused(f"{parts.hostname!r} resolves to non-public address {address}; refused.")
    bracketed = f"[{host}]" if ":" in host else host
    return Target(
        scheme=parts.scheme,
        host=host,
        port=port,
        address=addresses[0],
        host_header=bracketed if parts.port is None else f"{bracketed}:{port}",
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
    )


@dataclass(frozen=True)
class Answer:
    status: int
    location: str | None
    text: str  # at most RESPONSE_EXCERPT_CHARS characters of the body


def send(target: Target, *, method: str, body: bytes | None, headers: dict[str, str]) -> Answer:
    """One request to the checked address, never to a fresh DNS answer.

    The Host header names the URL's host; over https the TLS server name (SNI) and the
    certificate check use the host name too, so pinning the address weakens nothing.
    """
    timeout = urllib3.Timeout(connect=settings.SENTINELFLOW_WEBHOOK_TIMEOUT, read=settings.SENTINELFLOW_WEBHOOK_TIMEOUT)
    options: dict[str, Any] = {"host": target.address, "port": target.port, "timeout": timeout, "retries": False}
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            **options,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(**options)
    with pool:
        response = pool.urlopen(
            method,
            target.path,
            body=body,
            headers={**headers, "Host": target.host_header},
            redirect=False,
            assert_same_host=False,
            preload_content=False,
        )
        try:
            # Only the excerpt is kept: a target that answers gigabytes costs a few kilobytes.
            excerpt = response.read(RESPONSE_EXCERPT_CHARS * 4, decode_content=True)
        finally:
            response.release_conn()
            response.close()
    return Answer(
        status=response.status,
        location=response.headers.get("Location"),
        text=excerpt.decode("utf-8", errors="replace")[:RESPONSE_EXCERPT_CHARS],
    )


def literal_target_error(url: str) -> str | None:
    """At submit time, refuse what is refused whatever DNS says: IP literals and localhost."""
    if settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE:
        return None
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "Webhooks to localhost are refused."
    try:
        if not is_public_address(host):
            return f"Webhooks to non-public address {host} are refused."
    except ValueError:
        pass  # a host name: checked again when the job runs, after DNS
    return None


class WebhookPayload(serializers.Serializer[Any]):
    url = serializers.URLField(max_length=2048)
    body = serializers.JSONField(required=False, default=None, allow_null=True)
    headers = serializers.DictField(child=serializers.CharField(max_length=4096), required=False, default=dict)

    def validate_url(self, value: str) -> str:
        if urlsplit(value).scheme not in {"http", "https"}:
            raise serializers.ValidationError("Only http and https URLs are allowed.")
        if error := literal_target_error(value):
            raise serializers.ValidationError(error)
        return value


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, None when it has no valid one (check_target then refuses it)."""
    parts = urlsplit(url)
    try:
        return (parts.scheme, *host_and_port(parts))
    except (UnicodeError, ValueError):
        return None


@job_type("webhook", payload_serializer=WebhookPayload, secret_fields=["url", "headers", "body"])
def webhook(payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """POST `body` as JSON to `url`; a non-2xx answer fails the attempt.

    Redirects are followed by hand (at most five) so that every hop is
    checked against the address rules before it is requested. A 303 (and a
    301 or 302, as browsers do) becomes a GET without the body; a hop to
    another scheme, host or port drops the caller's headers and the body.
    """
    url = payload["url"]
    own_headers = {"User-Agent": "sentinelflow-webhook", "X-Sentinelflow-Job": context.job_id}
    headers = {**own_headers, **payload["headers"]}
    method, body = "POST", None
    if payload["body"] is not None:
        body = json.dumps(payload["body"]).encode()
        headers["Content-Type"] = "application/json"
    for _ in range(MAX_REDIRECTS + 1):
        target = check_target(url)
        response = send(target, method=method, body=body, headers=headers)
        if response.status in REDIRECT_STATUSES and response.location:
            url = urljoin(url, response.location)
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                # As browsers and requests do: the next hop is a GET, without the body.
                method, body = "GET", None
                headers = {name: value for name, value in headers.items() if name.lower() != "content-type"}
            if origin(url) != (target.scheme, target.host, target.port):
                # Another scheme, host or port: the caller's headers (Authorization, cookies, anything
                # custom) and the body were meant for the first origin only.
                headers, body = dict(own_headers), None
            continue
        if not 200 <= response.status < 400:
            raise RuntimeError(f"webhook answered {response.status}: {response.text}")
        return {"status_code": response.status, "body": response.text}
    raise PermanentJobError(f"more than {MAX_REDIRECTS} redirects")
