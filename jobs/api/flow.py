"""Flow control endpoints: GET /types, GET and PATCH /types/{name}, GET /queues, POST /queues/{name}/pause and
/resume. Reads need the read scope (or the model's view permission), writes an admin-scope key (or the model's
change permission, as in the admin). Every write goes through jobs.services.flow, which audits it."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import selectors, services
from ..handlers import registered_job_type
from .authentication import ApiPrincipal
from .schema import THROTTLED, FieldErrors, error

MAX_CONCURRENCY_LIMIT = 100_000


def actor_of(request: Request) -> str:
    user = request.user
    return user.actor if isinstance(user, ApiPrincipal) else f"user:{user.get_username()}"


class FlowPermission(permissions.BasePermission):
    """Reads: the read scope, or `jobs.view_<model>`; writes: the admin scope, or `jobs.change_<model>`."""

    message = "Reads need the read scope; pausing and changing limits need an admin-scope key."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        safe = request.method in permissions.SAFE_METHODS
        if isinstance(user, ApiPrincipal):
            return ("read" if safe else "admin") in user.scopes
        if not getattr(user, "is_active", False):
            return False
        model = getattr(view, "model_name", "")
        return bool(user.has_perm(f"jobs.{'view' if safe else 'change'}_{model}"))


class JobTypeSettingsSerializer(serializers.Serializer):
    """PATCH /types/{name}: any of the fields; `null` removes a limit (declared or not)."""

    max_concurrency = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_CONCURRENCY_LIMIT
    )
    rate = serializers.CharField(required=False, allow_null=True, max_length=16)
    paused = serializers.BooleanField(required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - set(services.TYPE_SETTING_FIELDS))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        if not data:
            raise serializers.ValidationError(
                {"non_field_errors": [f"Nothing to change: send any of {', '.join(services.TYPE_SETTING_FIELDS)}."]}
            )
        # JSON types as sent: "2" is not a number, "yes" not a boolean (DRF would coerce both).
        strict = {
            "max_concurrency": lambda value: value is None or (isinstance(value, int) and not isinstance(value, bool)),
            "paused": lambda value: isinstance(value, bool),
            "rate": lambda value: value is None or isinstance(value, str),
        }
        wrong = {name: ["Wrong JSON type."] for name, value in data.items() if not strict[name](value)}
        if wrong:
            raise serializers.ValidationError(wrong)
        attrs: dict[str, Any] = super().to_internal_value(data)
        return attrs

    def validate_rate(self, value: str | None) -> str | None:
        if value is not None and not services.valid_rate(value):
            raise serializers.ValidationError(
                'A rate is a count per second, minute or hour: "10/s", "100/m", "1000/h".'
            )
        return value


JOB_TYPE_FIELDS: dict[str, serializers.Field] = {
    "name": serializers.CharField(),
    "max_concurrency": serializers.IntegerField(allow_null=True),
    "rate": serializers.CharField(allow_null=True),
    "limit_by": serializers.CharField(allow_null=True),
    "paused": serializers.BooleanField(),
    "held": serializers.IntegerField(allow_null=True),
    "declared": serializers.DictField(),
    "overridden": serializers.ListField(child=serializers.CharField()),
    "updated_at": serializers.DateTimeField(allow_null=True),
}
QUEUE_FIELDS: dict[str, serializers.Field] = {
    "name": serializers.CharField(),
    "depth": serializers.IntegerField(allow_null=True),
    "paused": serializers.BooleanField(),
    "oldest_age_seconds": serializers.FloatField(allow_null=True),
    "workers": serializers.IntegerField(allow_null=True),
    "scheduled": serializers.IntegerField(allow_null=True),
}
JOB_TYPE = inline_serializer("JobTypeFlow", JOB_TYPE_FIELDS)
JOB_TYPES = inline_serializer("JobTypeFlowList", JOB_TYPE_FIELDS, many=True)
QUEUE = inline_serializer("QueueFlow", QUEUE_FIELDS)
QUEUES = inline_serializer("QueueFlowList", QUEUE_FIELDS, many=True)
NAME = OpenApiParameter("name", str, OpenApiParameter.PATH)
READS = {401: error("Missing or unknown API key"), 403: error("Reads need the read scope"), 429: THROTTLED}
WRITES = {401: error("Missing or unknown API key"), 403: error("Writes need an admin-scope key"), 429: THROTTLED}


class JobTypeListView(APIView):
    permission_classes = [FlowPermission]
    model_name = "jobtypesettings"

    @extend_schema(summary="List job types and their flow control", responses={200: JOB_TYPES, **READS})
    def get(self, request: Request) -> Response:
        return Response(selectors.job_types_overview())


class JobTypeDetailView(APIView):
    permission_classes = [FlowPermission]
    model_name = "jobtypesettings"

    @extend_schema(
        summary="Get a job type's flow control",
        parameters=[NAME],
        responses={200: JOB_TYPE, 404: error("No such job type"), **READS},
    )
    def get(self, request: Request, name: str) -> Response:
        found = selectors.job_type_overview(name)
        if found is None:
            raise services.UnknownName(f"No job type named {name!r}.")
        return Response(found)

    @extend_schema(
        summary="Change a job type's limits, or pause or resume it",
        parameters=[NAME],
        request=JobTypeSettingsSerializer,
        responses={200: JOB_TYPE, 400: FieldErrors, 404: error("No such job type"), **WRITES},
    )
    def patch(self, request: Request, name: str) -> Response:
        if registered_job_type(name) is None:
            raise services.UnknownName(f"No job type named {name!r}.")
        body = JobTypeSettingsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.job_type_update(name=name, changes=dict(body.validated_data), actor=actor_of(request))
        return Response(selectors.job_type_overview(name))


class QueueListView(APIView):
    permission_classes = [FlowPermission]
    model_name = "queuestate"

    @extend_schema(summary="List the configured queues", responses={200: QUEUES, **READS})
    def get(self, request: Request) -> Response:
        return Response(selectors.queues_overview())


class QueuePauseView(APIView):
    """POST /queues/{name}/pause or /resume."""

    permission_classes = [FlowPermission]
    model_name = "queuestate"
    paused = True

    @extend_schema(
        summary="Pause or resume a queue (its jobs wait in Redis)",
        parameters=[NAME],
        request=None,
        responses={200: QUEUE, 404: error("No such queue"), **WRITES},
    )
    def post(self, request: Request, name: str) -> Response:
        services.queue_set_paused(name=name, paused=self.paused, actor=actor_of(request))
        return Response(next(queue for queue in selectors.queues_overview() if queue["name"] == name))


class QueueResumeView(QueuePauseView):
    paused = False
