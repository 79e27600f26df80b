"""Per-key request throttling on the shared Redis cache (DRF's throttles, so 429 carries Retry-After)."""

from __future__ import annotations

import logging

from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework.throttling import SimpleRateThrottle

from .authentication import ApiPrincipal

logger = logging.getLogger(__name__)


class FailOpenRateThrottle(SimpleRateThrottle):
    """A throttle that lets requests through while Redis is down, instead of answering 500.

    With Redis down a submit must still be stored (as `pending`, for the sentinel to enqueue):
    the job store is the database, and an unthrottled moment costs less than a lost job.
    """

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except (RedisError, ConnectionInterrupted) as error:
            logger.warning("throttle %s skipped, Redis unavailable: %s", self.scope, error)
            return True


class ApiKeyRateThrottle(FailOpenRateThrottle):
    """One budget per API key (THROTTLE_RATE_KEY); the count is shared by every web process through Redis."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        if isinstance(request.user, ApiPrincipal):
            return self.cache_format % {"scope": self.scope, "ident": request.user.name}
        return None


class AnonymousRateThrottle(FailOpenRateThrottle):
    """One budget per client address for requests without a key (THROTTLE_RATE_ANON)."""

    scope = "anon"

    def get_cache_key(self, request, view):
        if isinstance(request.user, ApiPrincipal) or getattr(request.user, "is_authenticated", False):
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
