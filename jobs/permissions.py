from __future__ import annotations

from django.conf import settings
from rest_framework import permissions

from .authentication import ApiPrincipal


def scopes_of(request) -> frozenset[str]:
    """What the caller may do: an API key's scopes, or everything for a staff session."""
    user = request.user
    if isinstance(user, ApiPrincipal):
        return user.scopes
    if getattr(user, "is_staff", False) and user.is_active:
        return frozenset({"read", "write", "admin"})
    return frozenset()


class ApiKeyForWrites(permissions.BasePermission):
    """Writes need a key with the `write` scope (or a staff session); reads are open unless READS_REQUIRE_KEY."""

    message = "This API key may not do that."

    def has_permission(self, request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return not settings.SENTINELFLOW_READS_REQUIRE_KEY or "read" in scopes_of(request)
        return "write" in scopes_of(request)
