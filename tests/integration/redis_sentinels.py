"""Redis servers and Redis sentinels for the failover tests: their command lines and how to ask them things.

Shared by tests/integration/test_redis_sentinel.py (all on loopback) and tests/multihost (one network
namespace per host). `redis-server --sentinel` is the same binary as the server: nothing else to install.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sentinelflow_site.processes import redis_server_binary

SERVICE = "mymaster"
# Short, so a drill's failover takes seconds: a primary silent for 1 s is subjectively down; the quorum
# agrees it is objectively down, and one sentinel promotes the best replica.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def server_command(host: str, port: int, data_dir: Path, *, replica_of: tuple[str, int] | None = None) -> list[str]:
    command = [redis_server_binary(), "--port", str(port), "--bind", host, "--protected-mode", "no"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(data_dir), "--daemonize", "no"]
    if replica_of is not None:
        command += ["--replicaof", replica_of[0], str(replica_of[1])]
    return command


def sentinel_command(host: str, port: int, primary: tuple[str, int], config_dir: Path, *, quorum: int = 2) -> list[str]:
    """A sentinel watching `primary`; its config file (which the sentinel rewrites) lives in `config_dir`."""
    config = config_dir / f"sentinel-{host}-{port}.conf"
    config.write_text(
        "\n".join(
            [
                f"port {port}",
                f"bind {host}",
                "protected-mode no",
                f"dir {config_dir}",
                f"sentinel monitor {SERVICE} {primary[0]} {primary[1]} {quorum}",
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {SERVICE} 1",
                "",
            ]
        )
    )
    return [redis_server_binary(), str(config), "--sentinel"]


def quick_client(host: str, port: int) -> redis.Redis:
    """One try, one second: a stopped or cut-off node must not hold a poll up for long."""
    return redis.Redis(host=host, port=port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


def primary_of(sentinels: list[tuple[str, int]]) -> tuple[str, int] | None:
    """The primary the first answering sentinel names (None if none answers)."""
    for host, port in sentinels:
        try:
            client = quick_client(host, port)
            try:
                address = client.sentinel_get_master_addr_by_name(SERVICE)
            finally:
                client.close()
        except redis.RedisError:
            continue
        if address:
            host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
            return (host, int(address[1]))
    return None


def agreed_primary(sentinels: list[tuple[str, int]]) -> tuple[str, int] | None:
    """The primary every answering sentinel names, when they agree and it answers as a primary; else None."""
    named = set()
    for sentinel in sentinels:
        address = primary_of([sentinel])
        if address is not None:
            named.add(address)
    if len(named) != 1:
        return None
    (address,) = named
    try:
        client = quick_client(*address)
        try:
            role = client.role()[0]
        finally:
            client.close()
    except redis.RedisError:
        return None
    return address if role in (b"master", "master") else None


def wait_for_new_primary(
    sentinels: list[tuple[str, int]], old: tuple[str, int], *, timeout: float = 30
) -> tuple[tuple[str, int], float]:
    """Wait until the sentinels agree on a primary other than `old`; return it and the seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        address = agreed_primary(sentinels)
        if address is not None and address != old:
            return address, time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"the sentinels did not promote a new primary within {timeout:.0f} s (old: {old})")
