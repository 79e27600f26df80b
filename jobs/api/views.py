"""The jobs endpoints (/jobs, /jobs/batch, /jobs/bulk/{retry,cancel}, /jobs/{id}, /jobs/{id}/retry, /jobs/{id}/cancel)
and /metrics.

Each action validates with a serializer and calls one service; the OpenAPI declarations are in `schema`.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from .. import metrics, selectors, services
from ..models import Job
from . import schema
from .authentication import ApiPrincipal
from .pagination import JobCursorPagination
from .permissions import scopes_of
from .serializers import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    BulkActionSerializer,
    JobBatchSubmitSerializer,
    JobSerializer,
    JobSubmitSerializer,
    idempotency_key_from,
)

# The longest ?wait= on GET /jobs/{id} and GET /workflows/{id}: a waiting request holds a server thread.
MAX_WAIT_SECONDS = 60


def wait_seconds(request: Request) -> float:
    """The ?wait= of a read (0 without one); a bad value is a 400 naming the parameter."""
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_WAIT_SECONDS:  # (NaN fails both)
        raise ValidationError({"wait": [f"Seconds from 0 to {MAX_WAIT_SECONDS}."]})
    if seconds and "read" not in scopes_of(request):
        # A waiting request holds a server thread: anonymous readers must not be able to hold them all.
        raise PermissionDenied("?wait= needs an API key with the read scope (or a user with jobs.view_job).")
    return seconds


def actor_of(request: Request) -> str:
    """Who makes a change, for the job's timeline: an API key by name, or a logged-in user."""
    user = request.user
    return user.actor if isinstance(user, ApiPrincipal) else f"user:{user.get_username()}"


@schema.job_reads
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Job]):
    """Submit, inspect, retry and cancel jobs."""

    serializer_class = JobSerializer
    pagination_class = JobCursorPagination
    filterset_class = selectors.JobFilter
    lookup_field = "job_id"
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> Any:
        return selectors.job_list()

    def get_serializer_context(self) -> dict[str, Any]:
        # Reads are open by default: a caller without the read scope gets secrets redacted.
        return {**super().get_serializer_context(), "redact": "read" not in scopes_of(self.request)}

    def get_object(self) -> Job:
        return selectors.job_get(job_id=self.kwargs["job_id"])

    def retrieve(self, request: Request, job_id: str | None = None) -> Response:
        # ?wait=N answers as soon as the job finishes (the row is read every 50 ms), or after N seconds.
        seconds = wait_seconds(request)
        job = selectors.job_wait(job_id=self.kwargs["job_id"], seconds=seconds) if seconds else self.get_object()
        return Response(self.get_serializer(job).data)

    @schema.job_submit
    def create(self, request: Request) -> Response:
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
            self.submitted(job, request).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            headers={"Location": location},
        )

    @schema.job_batch
    @action(detail=False, methods=["post"])
    def batch(self, request: Request) -> Response:
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
            {"jobs": [self.submitted(job, request).data for job in jobs]},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    def submitted(self, job: Job, request: Request) -> JobSerializer:
        """A job as its submit answers it. A unique key is shared by every submitter of the type: the job
        another key submitted is answered with its secrets redacted (the caller asked to submit, not to
        read; its id and status are enough to follow it)."""
        context = self.get_serializer_context()
        if job.submitted_by != actor_of(request):
            context["redact"] = True
        return JobSerializer(job, context=context)

    @schema.job_bulk_retry
    @action(detail=False, methods=["post"], url_path="bulk/retry")
    def bulk_retry(self, request: Request) -> Response:
        return self._bulk(request, "retry")

    @schema.job_bulk_cancel
    @action(detail=False, methods=["post"], url_path="bulk/cancel")
    def bulk_cancel(self, request: Request) -> Response:
        return self._bulk(request, "cancel")

    def _bulk(self, request: Request, action: str) -> Response:
        body = BulkActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            queryset = selectors.job_filtered(body.validated_data["params"])
        except ValidationError as error:
            raise ValidationError({"filter": error.detail}) from None
        result = services.jobs_bulk(
            action=action,
            queryset=queryset,
            actor=actor_of(request),
            filter=body.validated_data["filter"],
            dry_run=body.validated_data["dry_run"],
        )
        return Response({"matched": result.matched, "changed": result.changed})

    @schema.job_retry
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, job_id: str | None = None) -> Response:
        job = services.job_retry(job=self.get_object(), actor=actor_of(request))
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)

    @schema.job_cancel
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, job_id: str | None = None) -> Response:
        job = services.job_cancel(job=self.get_object(), actor=actor_of(request))
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics in Prometheus text format (django-prometheus' metrics and the job metrics)."""
    return HttpResponse(generate_latest(metrics.registry()), content_type=CONTENT_TYPE_LATEST)
