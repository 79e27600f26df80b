"""X-API-Key authentication for the API."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from django.conf import settings
from rest_framework import authentication, exceptions

API_KEY_HEADER = "X-API-Key"
ALL_SCOPES = frozenset({"read", "write", "admin"})


@dataclass(frozen=True)
class ApiPrincipal:
    """Who a valid API key speaks for; set as request.user, the key's scopes drive permissions."""

    name: str
    scopes: frozenset[str] = field(default=ALL_SCOPES)
    is_authenticated: bool = True
    is_staff: bool = False
    is_active: bool = True

    @property
    def actor(self) -> str:
        return f"api-key:{self.name}"

    def __str__(self) -> str:
        return self.actor


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates `X-API-Key: <key>`; a key that is present but unknown is a 401 at once."""

    def authenticate(self, request):
        presented = request.META.get("HTTP_X_API_KEY")
        if presented is None:
            return None
        principal = self.principal_for(presented)
        if principal is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        return principal, principal

    @staticmethod
    def principal_for(presented: str) -> ApiPrincipal | None:
        bootstrap = settings.SENTINELFLOW_API_KEY
        # Constant-time comparison: the time taken must not reveal how much of the key matched.
        if bootstrap and hmac.compare_digest(presented.encode(), bootstrap.encode()):
            return ApiPrincipal(name="bootstrap")
        return None

    def authenticate_header(self, request) -> str:
        # Present on 401s; also what makes DRF answer 401 rather than 403 for a missing key.
        return f'ApiKey header="{API_KEY_HEADER}"'
