from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from . import metrics, redis_store, selectors, services
from .authentication import ApiPrincipal
from .handlers import job_type_names
from .models import JobStatus
from .permissions import scopes_of
from .schema import FieldErrors, error
from .serializers import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    JobBatchSubmitSerializer,
    JobSerializer,
    JobSubmitSerializer,
    idempotency_key_from,
)


def actor_of(request) -> str:
    """Who makes a change, for the job's timeline: an API key by name, or a logged-in user."""
    user = request.user
    return user.actor if isinstance(user, ApiPrincipal) else f"user:{user.get_username()}"


class JobCursorPagination(CursorPagination):
    """Newest first, on the unique creation-ordered primary key: no job is shown twice or skipped."""

    ordering = "-id"
    page_size = 50
    max_page_size = 500
    page_size_query_param = "limit"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        # ASCII digits only: str.isdigit() also accepts "²" and other digits that int() refuses.
        # Nor are very long numbers handed to int(), which refuses more than 4,300 digits.
        digits = raw.lstrip("0")
        if not re.fullmatch(r"[0-9]+", raw) or not digits:
            raise exceptions.ValidationError({"limit": ["A positive integer is required."]})
        return self.max_page_size if len(digits) > 9 else min(int(digits), self.max_page_size)

    def decode_cursor(self, request):
        cursor = super().decode_cursor(request)
        # The position is compared with the integer primary key: a decodable cursor with another
        # position would fail in the query (a 500); paginate_queryset turns NotFound into a 400.
        if cursor is not None and cursor.position is not None and not re.fullmatch(r"[0-9]{1,19}", cursor.position):
            raise exceptions.NotFound(self.invalid_cursor_message)
        return cursor

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except exceptions.NotFound:
            raise exceptions.ValidationError({"cursor": ["Invalid cursor."]}) from None


THROTTLED = error("Over the request budget of the key (or address); retry after Retry-After seconds")
DATETIME_OR_EMPTY = {"type": "string", "anyOf": [{"format": "date-time"}, {"enum": [""]}]}
# Reads need no key unless READS_REQUIRE_KEY=1: the empty requirement says "anonymous allowed".
OPEN_READS = [{"ApiKeyAuth": []}, {"cookieAuth": []}, {}]


def job_action_responses(*, conflict: str) -> dict:
    """The responses of POST /jobs/{id}/retry and /cancel, which differ only in why they conflict."""
    return {
        202: JobSerializer,
        401: error("Missing or unknown API key"),
        403: error("The key's scope does not allow writes"),
        404: error("No such job"),
        409: error(conflict),
        429: THROTTLED,
    }


BatchResult = inline_serializer("BatchResult", {"jobs": JobSerializer(many=True)})
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Repeat a submit safely: the same key (per API key) returns the same job with 200.",
)


@extend_schema_view(
    list=extend_schema(
        summary="List jobs, newest first",
        auth=OPEN_READS,
        parameters=[
            OpenApiParameter(
                "limit", {"type": "integer", "minimum": 1}, description="Page size (default 50; above 500, 500)."
            ),
            # An empty filter is no filter (the browsable API's filter form sends every field).
            OpenApiParameter("status", str, enum=[*JobStatus.values, ""], description="Only this status."),
            OpenApiParameter("type", str, enum=[*job_type_names(), ""], description="Only this type."),
            OpenApiParameter("queue", str, enum=[*settings.SENTINELFLOW_QUEUES, ""], description="Only this queue."),
            OpenApiParameter("created_after", DATETIME_OR_EMPTY, description="Created at or after (ISO 8601)."),
            OpenApiParameter("created_before", DATETIME_OR_EMPTY, description="Created before (ISO 8601)."),
        ],
        responses={
            200: JobSerializer(many=True),
            400: FieldErrors,
            401: error("Unknown key, or none where READS_REQUIRE_KEY=1"),
            429: THROTTLED,
        },
    ),
    retrieve=extend_schema(
        summary="Get a job",
        auth=OPEN_READS,
        responses={
            200: JobSerializer,
            401: error("Unknown key, or none where READS_REQUIRE_KEY=1"),
            404: error("No such job"),
            429: THROTTLED,
        },
    ),
)
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Submit, inspect, retry and cancel jobs."""

    serializer_class = JobSerializer
    pagination_class = JobCursorPagination
    filterset_class = selectors.JobFilter
    lookup_field = "job_id"
    lookup_value_regex = "[^/]+"

    def get_queryset(self):
        return selectors.job_list()

    def get_serializer_context(self):
        # Reads are open by default: a caller without the read scope gets secrets redacted.
        return {**super().get_serializer_context(), "redact": "read" not in scopes_of(self.request)}

    def get_object(self):
        return selectors.job_get(job_id=self.kwargs["job_id"])

    @extend_schema(
        summary="Submit a job",
        request=JobSubmitSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: JobSerializer,
            200: OpenApiResponse(JobSerializer, description="The job first submitted with this Idempotency-Key."),
            400: FieldErrors,
            401: error("Missing or unknown API key"),
            403: error("The key's scope does not allow writes"),
            413: error("Body over MAX_BODY_BYTES"),
            415: error("Not JSON"),
            422: error("Idempotency-Key reused with another body"),
            429: THROTTLED,
            503: error("Database unavailable; nothing stored"),
        },
    )
    def create(self, request):
        idempotency_key = idempotency_key_from(request)
        submit = JobSubmitSerializer(data=request.data, context={"now": services.now})
        submit.is_valid(raise_exception=True)
        job, created = services.job_submit(
            **submit.validated_data,
            submitted_by=actor_of(request),
            idempotency_key=idempotency_key,
            fingerprint=services.request_fingerprint(request.data),
        )
        location = request.build_absolute_uri(reverse("job-detail", kwargs={"job_id": job.job_id}))
        return Response(
            self.get_serializer(job).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            headers={"Location": location},
        )

    @extend_schema(
        summary="Submit up to 1,000 jobs at once",
        request=JobBatchSubmitSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: BatchResult,
            200: OpenApiResponse(BatchResult, description="The jobs first submitted with this Idempotency-Key."),
            400: FieldErrors,
            401: error("Missing or unknown API key"),
            403: error("The key's scope does not allow writes"),
            413: error("Body over MAX_BODY_BYTES"),
            422: error("Idempotency-Key reused with another body"),
            429: THROTTLED,
            503: error("Database unavailable; nothing stored"),
        },
    )
    @action(detail=False, methods=["post"])
    def batch(self, request):
        # "#<index>" is appended to the key for each job: leave room for it.
        idempotency_key = idempotency_key_from(request, max_length=MAX_IDEMPOTENCY_KEY_LENGTH - 5)
        submit = JobBatchSubmitSerializer(data=request.data, context={"now": services.now})
        submit.is_valid(raise_exception=True)
        jobs, created = services.job_submit_batch(
            items=submit.validated_data["jobs"],
            submitted_by=actor_of(request),
            idempotency_key=idempotency_key,
            fingerprint=services.request_fingerprint(request.data),
        )
        return Response(
            {"jobs": self.get_serializer(jobs, many=True).data},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        summary="Retry a failed or cancelled job",
        request=None,
        responses=job_action_responses(conflict="The job is not failed or cancelled"),
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, job_id=None):
        job = services.job_retry(job=self.get_object(), actor=actor_of(request))
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Cancel a job that has not finished",
        request=None,
        responses=job_action_responses(conflict="The job has already finished"),
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, job_id=None):
        job = services.job_cancel(job=self.get_object(), actor=actor_of(request))
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)


HealthStatus = inline_serializer("HealthStatus", {"status": serializers.CharField()})
Readiness = inline_serializer(
    "Readiness",
    {
        "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "checks": serializers.DictField(child=serializers.DictField(child=serializers.CharField())),
        "workers": serializers.IntegerField(allow_null=True),
    },
)


@extend_schema(summary="Liveness probe", responses={200: HealthStatus}, auth=[])
class HealthView(APIView):
    """Liveness: the process serves requests. Touches neither the database nor Redis."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []  # probes must never be throttled

    def get(self, request):
        return Response({"status": "ok"})


@extend_schema(summary="Readiness probe", responses={200: Readiness, 503: Readiness}, auth=[])
class ReadinessView(APIView):
    """Readiness: the database and Redis both answer, each within READINESS_TIMEOUT seconds.

    The checks run in threads so that a hung dependency cannot hang the probe; the number of
    live workers is reported but zero workers does not make the service unready.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []  # probes must never be throttled

    def get(self, request):
        checks, workers = readiness()
        ready = all(check["status"] == "ok" for check in checks.values())
        body = {"status": "ok" if ready else "unavailable", "checks": checks, "workers": workers}
        return Response(body, status=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE)


def metrics_view(request):
    """GET /metrics in Prometheus text format (django-prometheus' metrics and the job metrics)."""
    return HttpResponse(generate_latest(metrics.registry()), content_type=CONTENT_TYPE_LATEST)


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
    futures = {"database": _probe_pool.submit(_ping_database), "redis": _probe_pool.submit(_ping_redis)}
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
