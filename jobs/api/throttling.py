"""Per-key request throttling in the shared Redis (DRF's throttle classes, so 429 carries Retry-After)."""

from __future__ import annotations

import ipaddress
import logging
import secrets
from typing import TYPE_CHECKING

from django.conf import settings
from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from .. import redis_store
from .authentication import ApiPrincipal

# (Annotations only: DRF loads this module while rest_framework.views is still importing.)
if TYPE_CHECKING:
    from django.http import HttpRequest
    from rest_framework.request import Request
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

KEY_PREFIX = "sentinelflow:throttle:"


class FailOpenRateThrottle(SimpleRateThrottle):
    """DRF's sliding-window throttle, kept in a Redis sorted set: one round trip per request.

    DRF's own keeps the window as a pickled list in the cache, read and written back (two round
    trips, and a list as long as the budget to unpickle and pickle on every request, racy
    across processes). Here each allowed request is one member scored with its time, and one
    pipeline drops the expired ones, adds this one and counts; an over-budget request takes its
    member out again, so refused requests do not count, as in DRF.

    Redis down lets requests through instead of answering 500: a submit must still be stored
    (as `pending`, for the sentinel to enqueue); an unthrottled moment costs less than a lost job.
    """

    cache_format = KEY_PREFIX + "%(scope)s:%(ident)s"
    # Set by SimpleRateThrottle.__init__ from the rate (the DRF stubs do not declare them).
    num_requests: int
    duration: int
    # The window as last read, for wait().
    count: int
    oldest: float | None

    def _budget_key(self, request: Request | HttpRequest | None, view: APIView | None) -> str | None:
        """The key of the budget the request spends (None: no rate, or no budget for it); sets key and now."""
        if self.rate is None:
            return None
        self.key = key = self.get_cache_key(request, view)
        self.now = self.timer()
        return key

    def allow_request(self, request: Request | HttpRequest | None, view: APIView | None) -> bool:
        key = self._budget_key(request, view)
        if key is None:
            return True
        member = f"{self.now!r}:{secrets.token_hex(4)}"
        try:
            # No MULTI/EXEC: requests that interleave here only see each other's members a little early.
            with redis_store.connection().pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(key, "-inf", self.now - self.duration)
                pipe.zadd(key, {member: self.now})
                pipe.zcard(key)
                pipe.expire(key, self.duration)
                count = pipe.execute()[2]
                if count <= self.num_requests:
                    return True
                pipe.zrem(key, member)
                pipe.zrange(key, 0, 0, withscores=True)
                oldest = pipe.execute()[1]
        except RedisError as error:
            logger.warning("throttle %s skipped, Redis unavailable: %s", self.scope, error)
            return True
        # For wait(): the window as DRF would hold it, without this refused request.
        self.count = count - 1
        self.oldest = oldest[0][1] if oldest else None
        return False

    def exhausted(self, request: Request | HttpRequest | None) -> bool:
        """Whether the budget is spent, without counting this request (so wait() can say for how long)."""
        key = self._budget_key(request, None)
        if key is None:
            return False
        try:
            with redis_store.connection().pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(key, "-inf", self.now - self.duration)
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
                _, count, oldest = pipe.execute()
        except RedisError as error:
            logger.warning("throttle %s skipped, Redis unavailable: %s", self.scope, error)
            return False
        if count < self.num_requests:
            return False
        self.count = count
        self.oldest = oldest[0][1] if oldest else None
        return True

    def get_cache_key(self, request: Request | HttpRequest | None, view: APIView | None) -> str | None:
        raise NotImplementedError("each throttle says whose budget a request spends")

    def wait(self) -> float:
        """Seconds until the next request fits the budget, spread over what is left of it (as DRF's).

        Never None, so every 429 carries Retry-After: requests admitted side by side can push the
        window past the budget (see allow_request), where DRF's formula has nothing left to spread.
        """
        remaining = self.duration if self.oldest is None else self.duration - (self.now - self.oldest)
        available = max(1, self.num_requests - self.count + 1)
        return max(remaining, 0.001) / available

    def get_ident(self, request: Request | HttpRequest) -> str:
        """The client's address: the socket's, unless NUM_PROXIES says how many proxies to look through.

        DRF's own reads X-Forwarded-For when NUM_PROXIES is unset, so any client could pick a fresh
        address per request. With TRUSTED_PROXIES set, X-Forwarded-For also counts only when the
        socket's peer is one of them.
        """
        remote = request.META.get("REMOTE_ADDR", "")
        if api_settings.NUM_PROXIES is None or not from_trusted_proxy(remote):
            return remote
        return super().get_ident(request)  # type: ignore[arg-type]  # reads only META, as a Django request has


def from_trusted_proxy(address: str) -> bool:
    trusted = settings.SENTINELFLOW_TRUSTED_PROXIES
    if not trusted:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class ApiKeyRateThrottle(FailOpenRateThrottle):
    """One budget per API key (THROTTLE_RATE_KEY); the count is shared by every web process through Redis."""

    scope = "api_key"

    def get_cache_key(self, request: Request | HttpRequest | None, view: APIView | None) -> str | None:
        if request is None:  # only the admin's login form may have none; it uses LoginFailureThrottle
            return None
        if isinstance(request.user, ApiPrincipal):
            return self.cache_format % {"scope": self.scope, "ident": request.user.name}
        return None


class AnonymousRateThrottle(FailOpenRateThrottle):
    """One budget per client address for requests without a key (THROTTLE_RATE_ANON)."""

    scope = "anon"

    def get_cache_key(self, request: Request | HttpRequest | None, view: APIView | None) -> str | None:
        if request is None:  # only the admin's login form may have none; it uses LoginFailureThrottle
            return None
        if isinstance(request.user, ApiPrincipal) or getattr(request.user, "is_authenticated", False):
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class InvalidKeyThrottle(FailOpenRateThrottle):
    """A budget of unknown or revoked API keys per client address (THROTTLE_RATE_INVALID_KEY).

    Used by the authentication, which runs before DRF's throttles: an address over the budget is
    answered 429 before its key is looked up, so guessing keys costs no database query.
    """

    scope = "invalid_key"

    def get_cache_key(self, request: Request | HttpRequest | None, view: APIView | None) -> str | None:
        if request is None:  # only the admin's login form may have none; it uses LoginFailureThrottle
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginFailureThrottle(FailOpenRateThrottle):
    """A budget of failed admin logins (THROTTLE_RATE_LOGIN_FAILURES), one per client address and one
    per user name, so neither many guesses from one place nor a spread-out guess at one account pays."""

    scope = "login_failure"

    def __init__(self, ident: str):
        super().__init__()
        self.ident = ident

    def get_cache_key(self, request: Request | HttpRequest | None, view: APIView | None) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.ident}
