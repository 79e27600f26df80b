"""Clients that stop mid-headers must not take the web tier down (gunicorn as scripts/run.sh configures it)."""

from __future__ import annotations

import socket
import sys

import pytest
import requests

from sentinelflow_site.processes import free_port

from .harness import Stack, spawn, stop, wait_healthy

pytestmark = pytest.mark.integration

STALLED_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half-Sent: "  # never finished


def test_stalled_clients_do_not_stop_healthz(stack: Stack):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    # Fewer threads than stalled clients: only the per-socket timeout can free them for /healthz.
    env = stack.env(BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2", WEB_THREADS="2", WEB_CLIENT_TIMEOUT="2")
    args = [sys.executable, "-m", "gunicorn", "-c", "sentinelflow_site/gunicorn.conf.py"]
    web = spawn(
        "gunicorn-slow",
        [*args, "--no-control-socket", "sentinelflow_site.wsgi:application"],
        env=env,
        log_dir=stack.log_dir,
    )
    stalled: list[socket.socket] = []
    try:
        wait_healthy(web, base_url)
        for _ in range(6):
            client = socket.create_connection(("127.0.0.1", port), timeout=25)
            client.sendall(STALLED_REQUEST)
            stalled.append(client)

        # Sync workers answered this only once gunicorn killed the stuck workers (30 s each).
        response = requests.get(f"{base_url}/healthz", timeout=20)

        assert response.status_code == 200
        for client in stalled:
            try:
                assert client.recv(1024) == b""  # the server hung up on the stalled client
            except ConnectionResetError:
                pass
        assert web.alive()
    finally:
        for client in stalled:
            client.close()
        stop(web)
