"""API keys: create, revoke, and note when one was last used."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from ..models import ApiKey, ApiScope, validate_api_key_name
from . import transitions

API_KEY_PREFIX_BYTES = 6
API_KEY_SECRET_BYTES = 32
SIGNING_SECRET_PREFIX = "whsec_"
# last_used_at is a hint for operators, not an audit log: write it at most once a minute per key.
API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)


def hash_api_key_secret(secret: str) -> str:
    # The secret is 256 random bits: a fast hash is enough (no dictionary to guess from), and it keeps
    # authentication cheap on every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(*, name: str, scope: str = ApiScope.WRITE) -> tuple[ApiKey, str]:
    """Create a key; returns it and the full key text, which is not stored and cannot be shown again.

    The key's `signing_secret` (for its completion callbacks) is shown once too, by whoever creates it.

    Raises ValidationError for the reserved name `bootstrap` (the API_KEY setting's identity).
    """
    validate_api_key_name(name)
    prefix = secrets.token_hex(API_KEY_PREFIX_BYTES)
    secret = secrets.token_urlsafe(API_KEY_SECRET_BYTES)
    key = ApiKey.objects.create(
        name=name,
        prefix=prefix,
        secret_hash=hash_api_key_secret(secret),
        scope=scope,
        signing_secret=SIGNING_SECRET_PREFIX + secrets.token_urlsafe(API_KEY_SECRET_BYTES),
    )
    return key, f"sf_{prefix}_{secret}"


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key; it is refused from the next request on."""
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=transitions.now())
    key.refresh_from_db()
    return key


def api_key_touch(*, key: ApiKey) -> None:
    """Record that a key was used, at most once per API_KEY_TOUCH_INTERVAL."""
    stamp = transitions.now()
    if key.last_used_at is None or stamp - key.last_used_at > API_KEY_TOUCH_INTERVAL:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=stamp)
