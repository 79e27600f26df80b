from __future__ import annotations

from django.conf import settings
from rest_framework import permissions

from .authentication import ApiPrincipal
from .models import SCOPE_GRANTS, ApiScope


def scopes_of(request) -> frozenset[str]:
    """What the caller may do: an API key's scopes, or everything for a staff session."""
    user = request.user
    if isinstance(user, ApiPrincipal):
        return user.scopes
    if getattr(user, "is_staff", False) and user.is_active:
        return SCOPE_GRANTS[ApiScope.ADMIN]
    return frozenset()


class ApiKeyForWrites(permissions.BasePermission):
    """Writes need the `write` scope (a write or admin key, or a staff session); reads are open
    unless READS_REQUIRE_KEY=1, then they need the `read` scope."""

    message = "This API key's scope does not allow this request."

    def has_permission(self, request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return not settings.SENTINELFLOW_READS_REQUIRE_KEY or "read" in scopes_of(request)
        return "write" in scopes_of(request)
