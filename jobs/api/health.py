"""The probes: GET /healthz (liveness) and GET /readyz (readiness: the database and Redis answer)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from django.db import connection
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import metrics, redis_store
from . import schema


@schema.liveness
class HealthView(APIView):
    """Liveness: the process serves requests. Touches neither the database nor Redis."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []  # probes must never be throttled

    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


@schema.readiness
class ReadinessView(APIView):
    """Readiness: the database and Redis both answer, each within READINESS_TIMEOUT seconds.

    The checks run in threads so that a hung dependency cannot hang the probe; the number of
    live workers is reported but zero workers does not make the service unready.
    """

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []  # probes must never be throttled

    def get(self, request: Request) -> Response:
        checks, workers = readiness()
        ready = all(check["status"] == "ok" for check in checks.values())
        body = {"status": "ok" if ready else "unavailable", "checks": checks, "workers": workers}
        return Response(body, status=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE)


READINESS_TIMEOUT = 1.0
_probe_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


def _ping_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # this thread's own connection: do not leave it open


def _ping_redis() -> int:
    client = redis_store.probe_connection()
    client.ping()
    return metrics.live_worker_count()


def readiness() -> tuple[dict[str, dict[str, str]], int | None]:
    futures: dict[str, Any] = {"database": _probe_pool.submit(_ping_database), "redis": _probe_pool.submit(_ping_redis)}
    deadline = time.monotonic() + READINESS_TIMEOUT
    checks: dict[str, dict[str, str]] = {}
    workers = None
    for name, future in futures.items():
        try:
            value = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            checks[name] = {"status": "error", "error": f"no answer within {READINESS_TIMEOUT:g} s"}
        except Exception as error:  # noqa: BLE001 - any failure means not ready; the reason is reported
            checks[name] = {"status": "error", "error": f"{error.__class__.__name__}: {error}"[:300]}
        else:
            checks[name] = {"status": "ok"}
            if name == "redis":
                workers = value
    return checks, workers
