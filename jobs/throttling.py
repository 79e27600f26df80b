"""Per-key request throttling on the shared Redis cache (DRF's throttles, so 429 carries Retry-After)."""

from __future__ import annotations

from rest_framework.throttling import SimpleRateThrottle

from .authentication import ApiPrincipal


class ApiKeyRateThrottle(SimpleRateThrottle):
    """One budget per API key (THROTTLE_RATE_KEY); the count is shared by every web process through Redis."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        if isinstance(request.user, ApiPrincipal):
            return self.cache_format % {"scope": self.scope, "ident": request.user.name}
        return None


class AnonymousRateThrottle(SimpleRateThrottle):
    """One budget per client address for requests without a key (THROTTLE_RATE_ANON)."""

    scope = "anon"

    def get_cache_key(self, request, view):
        if isinstance(request.user, ApiPrincipal) or getattr(request.user, "is_authenticated", False):
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
