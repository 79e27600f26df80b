from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from django.conf import settings
from rest_framework import serializers

from jobs.exceptions import PermanentJobError

from . import JobContext, job_type

MAX_REDIRECTS = 5
RESPONSE_EXCERPT_CHARS = 1000


class WebhookTargetRefused(PermanentJobError):
    """The URL points at an address that webhooks may not reach."""


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_target(url: str) -> None:
    """Refuse URLs whose host is, or resolves to, a loopback, private, link-local or reserved address.

    Skipped when WEBHOOK_ALLOW_PRIVATE=1 (for webhooks inside a private network).
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise WebhookTargetRefused(f"Only http and https URLs with a host are allowed: {url!r}")
    if settings.SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        raise WebhookTargetRefused(f"Cannot resolve {parts.hostname!r}: {error}") from None
    for info in infos:
        address = info[4][0]
        if not is_public_address(address):
            raise WebhookTargetRefused(f"{parts.hostname!r} resolves to non-public address {address}; refused.")


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


class WebhookPayload(serializers.Serializer):
    url = serializers.URLField(max_length=2048)
    body = serializers.JSONField(required=False, default=None, allow_null=True)
    headers = serializers.DictField(child=serializers.CharField(max_length=4096), required=False, default=dict)

    def validate_url(self, value: str) -> str:
        if urlsplit(value).scheme not in {"http", "https"}:
            raise serializers.ValidationError("Only http and https URLs are allowed.")
        if error := literal_target_error(value):
            raise serializers.ValidationError(error)
        return value


@job_type("webhook", payload_serializer=WebhookPayload)
def webhook(payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """POST `body` as JSON to `url`; a non-2xx answer fails the attempt.

    Redirects are followed by hand (at most five) so that every hop is
    checked against the address rules before it is requested.
    """
    url = payload["url"]
    headers = {"User-Agent": "sentinelflow-webhook", "X-Sentinelflow-Job": context.job_id, **payload["headers"]}
    for _ in range(MAX_REDIRECTS + 1):
        check_target(url)
        response = requests.post(
            url,
            json=payload["body"],
            headers=headers,
            timeout=settings.SENTINELFLOW_WEBHOOK_TIMEOUT,
            allow_redirects=False,
        )
        if response.is_redirect:
            url = urljoin(url, response.headers["Location"])
            continue
        if not response.ok:
            raise RuntimeError(f"webhook answered {response.status_code}: {response.text[:RESPONSE_EXCERPT_CHARS]}")
        return {"status_code": response.status_code, "body": response.text[:RESPONSE_EXCERPT_CHARS]}
    raise PermanentJobError(f"more than {MAX_REDIRECTS} redirects")
