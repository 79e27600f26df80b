from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework import permissions

from .authentication import ApiPrincipal

# (Annotations only: DRF loads this module while rest_framework.views is still importing.)
if TYPE_CHECKING:
    from django.http import HttpRequest
    from rest_framework.request import Request
    from rest_framework.views import APIView

# What a logged-in user needs, per viewset action, to write through the API: Django's permissions,
# as in the admin. A staff flag alone grants nothing.
SESSION_WRITE_PERMISSIONS = {
    "create": "jobs.add_job",
    "batch": "jobs.add_job",
    "retry": "jobs.retry_job",
    "cancel": "jobs.cancel_job",
    # A bulk action needs what the single one needs.
    "bulk_retry": "jobs.retry_job",
    "bulk_cancel": "jobs.cancel_job",
}


def scopes_of(request: Request | HttpRequest) -> frozenset[str]:
    """What the caller may read: an API key's scopes; `read` for a user with the `jobs.view_job` permission."""
    user = request.user
    if isinstance(user, ApiPrincipal):
        return user.scopes
    if getattr(user, "is_active", False) and user.has_perm("jobs.view_job"):
        return frozenset({"read"})
    return frozenset()


class ApiKeyForWrites(permissions.BasePermission):
    """Writes need the `write` scope of a write or admin key, or a session whose user has the action's
    Django permission (SESSION_WRITE_PERMISSIONS). Reads are open unless READS_REQUIRE_KEY=1, then
    they need the `read` scope (a key, or a user with `jobs.view_job`)."""

    message = "This API key's scope (or this user's permissions) does not allow this request."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return not settings.SENTINELFLOW_READS_REQUIRE_KEY or "read" in scopes_of(request)
        user = request.user
        if isinstance(user, ApiPrincipal):
            return "write" in user.scopes
        needed = SESSION_WRITE_PERMISSIONS.get(getattr(view, "action", None) or "")
        return needed is not None and getattr(user, "is_active", False) and user.has_perm(needed)
