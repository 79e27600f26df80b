"""The OpenAPI declarations (drf-spectacular): what each endpoint answers, beyond what the views say themselves.

The views apply these decorators; the schema at /api/schema/ and the docs at /api/docs/ are built from them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers

from ..handlers import job_type_names
from ..handlers.django_task import TASK_PATH
from ..models import JobStatus
from .serializers import BulkActionSerializer, JobBatchSubmitSerializer, JobSerializer, JobSubmitSerializer


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "jobs.api.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "The bootstrap API_KEY, or a key made in the admin or with manage.py create_api_key.",
        }


Detail = inline_serializer("Detail", {"detail": serializers.CharField()})


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(Detail, description=description)


FieldErrors = OpenApiResponse(
    {"type": "object", "additionalProperties": True},
    description="Validation failed: each invalid field (or header, or batch index) maps to its messages, "
    'e.g. {"queue": ["Unknown queue ..."]}; or {"detail": "..."} for a body that is not JSON.',
)
THROTTLED = error("Over the request budget of the key (or address); retry after Retry-After seconds")
# A Django task's jobs have its dotted path as their type (jobs.handlers.django_task).
TASK_TYPE = f"^{TASK_PATH.pattern}$"
DATETIME_OR_EMPTY = {"type": "string", "anyOf": [{"format": "date-time"}, {"enum": [""]}]}
# Reads need no key unless READS_REQUIRE_KEY=1: the empty requirement says "anonymous allowed".
OPEN_READS: list[dict[str, list[str]]] = [{"ApiKeyAuth": []}, {"cookieAuth": []}, {}]
UNKNOWN_READER = error("Unknown key, or none where READS_REQUIRE_KEY=1")
NO_WRITE_KEY = error("Missing or unknown API key")
NO_WRITE_SCOPE = error("The key's scope does not allow writes")


def job_action_responses(*, conflict: str) -> dict[int, Any]:
    """The responses of POST /jobs/{id}/retry and /cancel, which differ only in why they conflict."""
    return {
        202: JobSerializer,
        401: NO_WRITE_KEY,
        403: NO_WRITE_SCOPE,
        404: error("No such job"),
        409: error(conflict),
        429: THROTTLED,
    }


def submit_responses(body: Any, *, again: str, not_json: bool) -> dict[int, Any]:
    """The responses of POST /jobs and /jobs/batch: `body` is what a submit returns, `again` the 200's meaning;
    `not_json` whether a 415 is declared."""
    responses = {
        201: body,
        200: OpenApiResponse(body, description=again),
        400: FieldErrors,
        401: NO_WRITE_KEY,
        403: NO_WRITE_SCOPE,
        413: error("Body over MAX_BODY_BYTES"),
        415: error("Not JSON"),
        422: error("Idempotency-Key reused with another body"),
        429: THROTTLED,
        503: error("Database unavailable; nothing stored"),
    }
    if not not_json:
        del responses[415]
    return responses


FIRST_SUBMITTED = "first submitted with this Idempotency-Key."
BatchResult = inline_serializer("BatchResult", {"jobs": JobSerializer(many=True)})
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Repeat a submit safely: the same key (per API key) returns the same job with 200.",
)

# A job id is a UUID: said in the schema, so that clients (and schemathesis) do not take the path's
# other words (/jobs/batch) for ids.
WAIT = OpenApiParameter(
    "wait",
    {"type": "number", "minimum": 0, "maximum": 60},
    description="Seconds to wait for it to finish; the answer comes as soon as it does. Needs the read scope.",
)
JOB_ID = OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The job's id.")

job_reads = extend_schema_view(
    list=extend_schema(
        summary="List jobs, newest first",
        auth=OPEN_READS,  # type: ignore[arg-type]  # security requirement objects; the hint says only names
        parameters=[
            OpenApiParameter(
                "limit", {"type": "integer", "minimum": 1}, description="Page size (default 50; above 500, 500)."
            ),
            # An empty filter is no filter (the browsable API's filter form sends every field).
            OpenApiParameter("status", str, enum=[*JobStatus.values, ""], description="Only this status."),
            OpenApiParameter(
                "type",
                {
                    "anyOf": [
                        {"type": "string", "enum": [*job_type_names(), ""]},
                        {"type": "string", "pattern": TASK_TYPE},
                    ]
                },
                description="Only this type: a registered type, or a Django task's dotted path.",
            ),
            OpenApiParameter("queue", str, enum=[*settings.SENTINELFLOW_QUEUES, ""], description="Only this queue."),
            OpenApiParameter("created_after", DATETIME_OR_EMPTY, description="Created at or after (ISO 8601)."),
            OpenApiParameter("created_before", DATETIME_OR_EMPTY, description="Created before (ISO 8601)."),
            OpenApiParameter(
                "tag",
                {"type": "array", "items": {"type": "string", "maxLength": 256}, "maxItems": 10},
                explode=True,
                description="Only jobs with every tag given (repeat the parameter). metadata.<key>=<value> and "
                "payload.<field>=<value> filter by a metadata or payload value the same way.",
            ),
        ],
        responses={200: JobSerializer(many=True), 400: FieldErrors, 401: UNKNOWN_READER, 429: THROTTLED},
    ),
    retrieve=extend_schema(
        summary="Get a job",
        parameters=[JOB_ID, WAIT],
        auth=OPEN_READS,  # type: ignore[arg-type]  # security requirement objects; the hint says only names
        responses={
            200: JobSerializer,
            400: FieldErrors,
            401: UNKNOWN_READER,
            403: error("?wait= without the read scope"),
            404: error("No such job"),
            429: THROTTLED,
        },
    ),
)
job_submit = extend_schema(
    summary="Submit a job",
    request=JobSubmitSerializer,
    parameters=[IDEMPOTENCY_HEADER],
    responses=submit_responses(JobSerializer, again=f"The job {FIRST_SUBMITTED}", not_json=True),
)
job_batch = extend_schema(
    summary="Submit up to 1,000 jobs at once",
    request=JobBatchSubmitSerializer,
    parameters=[IDEMPOTENCY_HEADER],
    responses=submit_responses(BatchResult, again=f"The jobs {FIRST_SUBMITTED}", not_json=False),
)
job_retry = extend_schema(
    summary="Retry a failed or cancelled job",
    parameters=[JOB_ID],
    request=None,
    responses=job_action_responses(conflict="The job is not failed or cancelled"),
)
job_cancel = extend_schema(
    summary="Cancel a job that has not finished",
    parameters=[JOB_ID],
    request=None,
    responses=job_action_responses(conflict="The job has already finished"),
)

BulkResult = inline_serializer(
    "BulkResult", {"matched": serializers.IntegerField(), "changed": serializers.IntegerField()}
)


def bulk_action(summary: str) -> Any:
    return extend_schema(
        summary=summary,
        request=BulkActionSerializer,
        responses={
            200: OpenApiResponse(BulkResult, description="How many jobs matched the filter and how many changed"),
            400: FieldErrors,
            401: NO_WRITE_KEY,
            403: NO_WRITE_SCOPE,
            429: THROTTLED,
        },
    )


job_bulk_retry = bulk_action("Retry every failed or cancelled job a filter selects (dry_run: only count)")
job_bulk_cancel = bulk_action("Cancel every unfinished job a filter selects (dry_run: only count)")

HealthStatus = inline_serializer("HealthStatus", {"status": serializers.CharField()})
Readiness = inline_serializer(
    "Readiness",
    {
        "status": serializers.ChoiceField(choices=["ok", "unavailable"]),
        "checks": serializers.DictField(child=serializers.DictField(child=serializers.CharField())),
        "workers": serializers.IntegerField(allow_null=True),
    },
)
liveness = extend_schema(summary="Liveness probe", responses={200: HealthStatus}, auth=[])
readiness = extend_schema(summary="Readiness probe", responses={200: Readiness, 503: Readiness}, auth=[])


# --------------------------------------------------------------------------- workflows

WORKFLOW_ID = OpenApiParameter(
    "workflow_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The workflow's id."
)
WorkflowBody = inline_serializer(
    "Workflow",
    {
        "workflow_id": serializers.UUIDField(),
        "status": serializers.ChoiceField(choices=["running", "succeeded", "failed", "cancelled"]),
        "counts": serializers.DictField(child=serializers.IntegerField()),
        "progress": serializers.FloatField(),
        "finished_at": serializers.DateTimeField(allow_null=True),
        "created_at": serializers.DateTimeField(),
        "jobs": serializers.DictField(child=JobSerializer(), help_text="Node name to its job, plus after and run_if."),
    },
)
NO_WORKFLOW = error("No such workflow")
workflow_create = extend_schema(
    summary="Submit a workflow: a graph of jobs, stored at once",
    responses={
        201: WorkflowBody,
        400: FieldErrors,
        401: NO_WRITE_KEY,
        403: NO_WRITE_SCOPE,
        413: error("Body over MAX_BODY_BYTES"),
        415: error("Not JSON"),
        429: THROTTLED,
        503: error("Database unavailable; nothing stored"),
    },
)
workflow_retrieve = extend_schema(
    summary="A workflow: status, counts per status, progress, every node",
    parameters=[WORKFLOW_ID, WAIT],
    auth=OPEN_READS,  # type: ignore[arg-type]  # security requirement objects; the hint says only names
    responses={
        200: WorkflowBody,
        400: FieldErrors,
        401: UNKNOWN_READER,
        403: error("?wait= without the read scope"),
        404: NO_WORKFLOW,
        429: THROTTLED,
    },
)


def workflow_action(summary: str) -> Any:
    return extend_schema(
        summary=summary,
        request=None,
        parameters=[WORKFLOW_ID],
        responses={202: WorkflowBody, 401: NO_WRITE_KEY, 403: NO_WRITE_SCOPE, 404: NO_WORKFLOW, 429: THROTTLED},
    )
