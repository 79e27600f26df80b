"""X-API-Key authentication for the API."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework import authentication, exceptions

from .. import services
from ..models import BOOTSTRAP_KEY_NAME, SCOPE_GRANTS, ApiKey, ApiScope

# (Annotations only: DRF loads this module while rest_framework.views is still importing.)
if TYPE_CHECKING:
    from rest_framework.request import Request

API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class ApiPrincipal:
    """Who a valid API key speaks for; set as request.user, the key's scopes drive permissions."""

    name: str
    scopes: frozenset[str] = field(default=SCOPE_GRANTS[ApiScope.ADMIN])
    is_authenticated: bool = True
    is_staff: bool = False
    is_active: bool = True

    @property
    def actor(self) -> str:
        return f"api-key:{self.name}"

    def __str__(self) -> str:
        return self.actor


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates `X-API-Key: <key>`; a key that is present but unknown or revoked is a 401 at once.

    Accepts the bootstrap key from the API_KEY setting and the keys stored in the database
    (`sf_<prefix>_<secret>`), each compared in constant time. Revocation needs no cache flush:
    every request reads the key's row. Unknown keys are counted per client address; past
    THROTTLE_RATE_INVALID_KEY the address gets 429s, before any lookup, until the window passes.
    """

    def authenticate(self, request: Request) -> tuple[ApiPrincipal, ApiPrincipal] | None:
        presented = request.META.get("HTTP_X_API_KEY")
        if presented is None:
            return None
        principal = self.bootstrap_principal(presented)
        if principal is None:
            from .throttling import InvalidKeyThrottle  # the throttles import this module

            throttle = InvalidKeyThrottle()
            if throttle.exhausted(request):
                raise exceptions.Throttled(throttle.wait())
            principal = self.principal_for(presented)
            if principal is None:
                throttle.allow_request(request, None)  # counts this failure
                raise exceptions.AuthenticationFailed("Invalid API key.")
        return principal, principal

    @staticmethod
    def bootstrap_principal(presented: str) -> ApiPrincipal | None:
        bootstrap = settings.SENTINELFLOW_API_KEY
        # Constant-time comparison: the time taken must not reveal how much of the key matched.
        if bootstrap and hmac.compare_digest(presented.encode(), bootstrap.encode()):
            return ApiPrincipal(name=BOOTSTRAP_KEY_NAME)
        return None

    @staticmethod
    def principal_for(presented: str) -> ApiPrincipal | None:
        """The principal of a stored key (`sf_<prefix>_<secret>`), None if unknown or revoked."""
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != "sf":
            return None
        key = ApiKey.objects.filter(prefix=parts[1], revoked_at__isnull=True).first()
        if key is None or not hmac.compare_digest(key.secret_hash, services.hash_api_key_secret(parts[2])):
            return None
        services.api_key_touch(key=key)
        return ApiPrincipal(name=key.name, scopes=key.scopes)

    def authenticate_header(self, request: Request) -> str:
        # Present on 401s; also what makes DRF answer 401 rather than 403 for a missing key.
        return f'ApiKey header="{API_KEY_HEADER}"'
