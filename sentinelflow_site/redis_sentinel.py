"""Redis Sentinel wiring in one place: the cache's Sentinel options, and short-timeout clients for probes.

With REDIS_SENTINELS set, no client connects to a fixed address: redis-py's SentinelConnectionPool asks the
sentinels for the current primary of the service when it connects, and a connection that is refused or
answered READONLY (a primary demoted to a replica) is dropped and asks again. REDIS_URL then keeps only
its database number, its password (the data nodes') and its scheme (rediss:// for TLS to the data nodes).

Plain functions of the settings' values, no Django: settings.py imports this module.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

# A sentinel that does not answer within this long is skipped for the next one.
SENTINEL_TIMEOUT = 1.0


def sentinel_location(redis_url: str, service_name: str) -> str:
    """REDIS_URL with the service name in place of host and port: django-redis's Sentinel factory reads it so."""
    url = urlsplit(redis_url)
    credentials = url.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{service_name}" if credentials else service_name
    return url._replace(netloc=netloc).geturl()


def sentinel_kwargs(password: str | None, *, timeout: float = SENTINEL_TIMEOUT) -> dict[str, Any]:
    """How to talk to the sentinels themselves (their password is not the data nodes')."""
    options: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    if password:
        options["password"] = password
    return options


def cache_sentinel_options(sentinels: list[tuple[str, int]], password: str | None) -> dict[str, Any]:
    """The django-redis cache OPTIONS that make its connection pool follow the sentinels' primary."""
    return {
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "SENTINELS": sentinels,
        "SENTINEL_KWARGS": sentinel_kwargs(password),
    }


def primary_client(
    redis_url: str,
    sentinels: list[tuple[str, int]],
    service_name: str,
    sentinel_password: str | None,
    *,
    timeout: float,
) -> Redis:
    """A client of the current primary with short timeouts and no retries: for probes that must answer fast."""
    parsed = parse_url(redis_url)  # unquotes the password, reads the database number
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs(sentinel_password, timeout=timeout))
    options: dict[str, Any] = {
        "db": parsed.get("db", 0),
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    for key in ("username", "password"):
        if parsed.get(key):
            options[key] = parsed[key]
    if redis_url.startswith("rediss://"):
        options["ssl"] = True
    client: Redis = manager.master_for(service_name, **options)
    return client
