"""The schedules endpoints: /schedules, /schedules/{name}, /schedules/{name}/trigger.

Admin-scope keys (or users with the schedule permissions) write; any key with the read scope (or a user
with jobs.view_schedule) reads: a schedule's payload is shown in full, so reads always need a key.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import services
from ..handlers import get_job_type
from ..models import SCHEDULE_NAME_MAX_LENGTH, Misfire, Schedule, validate_schedule_name
from .authentication import ApiPrincipal
from .schema import THROTTLED, FieldErrors, error
from .serializers import (
    MAX_QUEUE_NAME,
    MAX_RETRIES_LIMIT,
    MAX_TYPE_NAME,
    JobSerializer,
    JobSubmitSerializer,
    UTCDateTimeField,
)

SCHEDULE_FIELDS = frozenset(
    {"name", "type", "payload", "queue", "max_retries", "timeout", "cron", "timezone", "interval", "enabled", "misfire"}
)
MAX_INTERVAL = 366 * 24 * 3600
DUPLICATE_NAME = "A schedule with this name exists already."

# What a logged-in user needs, per action, to write schedules through the API (as in the admin).
SESSION_SCHEDULE_PERMISSIONS = {
    "create": "jobs.add_schedule",
    "partial_update": "jobs.change_schedule",
    "trigger": "jobs.change_schedule",
    "destroy": "jobs.delete_schedule",
}


class AdminKeyForScheduleWrites(permissions.BasePermission):
    """Writes need an admin-scope key (or the action's Django permission); reads the read scope."""

    message = "Schedules are written with an admin-scope key and read with any key."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if isinstance(user, ApiPrincipal):
            needed = "read" if request.method in permissions.SAFE_METHODS else "admin"
            return needed in user.scopes
        if not getattr(user, "is_active", False):
            return False
        if request.method in permissions.SAFE_METHODS:
            return bool(user.has_perm("jobs.view_schedule"))
        needed_permission = SESSION_SCHEDULE_PERMISSIONS.get(getattr(view, "action", None) or "")
        return needed_permission is not None and bool(user.has_perm(needed_permission))


class ScheduleSerializer(serializers.Serializer):
    """A schedule as the API shows it, and the flat body of POST /schedules and PATCH /schedules/{name}."""

    name = serializers.CharField(max_length=SCHEDULE_NAME_MAX_LENGTH, validators=[validate_schedule_name])
    type = serializers.CharField(max_length=MAX_TYPE_NAME)
    payload = serializers.JSONField(required=False, default=dict)
    queue = serializers.CharField(required=False, default="default", max_length=MAX_QUEUE_NAME)
    max_retries = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_RETRIES_LIMIT)
    timeout = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    cron = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=100)
    timezone = serializers.CharField(required=False, default="UTC", max_length=64)
    interval = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_INTERVAL)
    enabled = serializers.BooleanField(required=False, default=True)
    misfire = serializers.ChoiceField(choices=Misfire.choices, required=False, default=Misfire.RUN_ONCE)
    next_run_at = UTCDateTimeField(read_only=True)
    last_run_at = UTCDateTimeField(read_only=True)
    last_job = serializers.SerializerMethodField()
    created_at = UTCDateTimeField(read_only=True)
    updated_at = UTCDateTimeField(read_only=True)

    def get_last_job(self, schedule: Schedule) -> str | None:
        return str(schedule.last_job.job_id) if schedule.last_job is not None else None

    def to_representation(self, instance: Schedule) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        data["cron"] = data["cron"] or None
        return data

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - SCHEDULE_FIELDS)
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        attrs: dict[str, Any] = super().to_internal_value(data)
        if "cron" in attrs:
            attrs["cron"] = (attrs["cron"] or "").strip()
        return attrs

    def validate_name(self, value: str) -> str:
        if self.instance is not None:
            if value != self.instance.name:
                raise serializers.ValidationError("A schedule's name cannot be changed.")
        elif Schedule.objects.filter(name=value).exists():
            raise serializers.ValidationError(DUPLICATE_NAME)
        return value

    # The checks of a submit, as a submit words them.
    validate_type = JobSubmitSerializer.validate_type
    validate_queue = JobSubmitSerializer.validate_queue

    def validate_timeout(self, value: int | None) -> int | None:
        return None if value is None else JobSubmitSerializer.validate_timeout(self, value)  # type: ignore[arg-type]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A PATCH is checked as the schedule it would make: the stored fields with the changes on top.
        merged = {name: getattr(self.instance, name) for name in SCHEDULE_FIELDS} if self.instance else {}
        merged.update(attrs)
        timing = services.timing_errors(
            cron=merged.get("cron") or "", timezone=merged.get("timezone") or "UTC", interval=merged.get("interval")
        )
        if timing:
            raise serializers.ValidationError({field: [message] for field, message in timing.items()})
        job_type = get_job_type(merged["type"])
        assert job_type is not None  # validate_type, or the stored type
        payload = job_type.payload_serializer(data=merged.get("payload"))
        if not payload.is_valid():
            raise serializers.ValidationError({"payload": payload.errors})
        if "payload" in attrs or "type" in attrs:
            attrs["payload"] = payload.validated_data
        return attrs


NAME = OpenApiParameter(
    "name",
    {"type": "string", "pattern": rf"^[A-Za-z0-9_-]{{1,{SCHEDULE_NAME_MAX_LENGTH}}}$"},
    OpenApiParameter.PATH,
    description="The schedule's name.",
)
NO_KEY = error("Missing or unknown API key")
NO_READ = error("Reads need the read scope (or jobs.view_schedule)")
NO_ADMIN = error("Writes need an admin-scope key (or the schedule permission)")
NO_SCHEDULE = error("No such schedule")
BAD_JSON = error("Not JSON")
READS = {401: NO_KEY, 403: NO_READ, 429: THROTTLED}
WRITES = {401: NO_KEY, 403: NO_ADMIN, 429: THROTTLED}


@extend_schema_view(
    list=extend_schema(summary="List schedules", responses={200: ScheduleSerializer(many=True), **READS}),
    retrieve=extend_schema(
        summary="Get a schedule", parameters=[NAME], responses={200: ScheduleSerializer, 404: NO_SCHEDULE, **READS}
    ),
    create=extend_schema(
        summary="Create a schedule",
        request=ScheduleSerializer,
        responses={201: ScheduleSerializer, 400: FieldErrors, 415: BAD_JSON, **WRITES},
    ),
    partial_update=extend_schema(
        summary="Change a schedule",
        parameters=[NAME],
        request=ScheduleSerializer,
        responses={200: ScheduleSerializer, 400: FieldErrors, 404: NO_SCHEDULE, 415: BAD_JSON, **WRITES},
    ),
    destroy=extend_schema(
        summary="Delete a schedule (its jobs stay)",
        parameters=[NAME],
        responses={204: None, 404: NO_SCHEDULE, **WRITES},
    ),
)
class ScheduleViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet[Schedule],
):
    """Jobs submitted on a cron expression or an interval, by the sentinel."""

    serializer_class = ScheduleSerializer
    permission_classes = [AdminKeyForScheduleWrites]
    pagination_class = None
    filter_backends: list[Any] = []
    lookup_field = "name"
    # Names are slugs: anything else in the URL is a 404 before any lookup.
    lookup_value_regex = f"[A-Za-z0-9_-]{{1,{SCHEDULE_NAME_MAX_LENGTH}}}"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> Any:
        return Schedule.objects.select_related("last_job")

    def get_object(self) -> Schedule:
        return get_object_or_404(self.get_queryset(), name=self.kwargs["name"])

    def create(self, request: Request) -> Response:
        body = ScheduleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            with transaction.atomic():
                schedule = services.schedule_create(**body.validated_data)
        except IntegrityError:  # a racing create took the name after the check
            raise serializers.ValidationError({"name": [DUPLICATE_NAME]}) from None
        return Response(ScheduleSerializer(schedule).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, name: str | None = None) -> Response:
        schedule = self.get_object()
        body = ScheduleSerializer(schedule, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        schedule = services.schedule_update(schedule, **body.validated_data)
        return Response(ScheduleSerializer(schedule).data)

    @extend_schema(
        summary="Submit the schedule's job now (also while disabled)",
        parameters=[NAME],
        request=None,
        responses={202: OpenApiResponse(JobSerializer, description="The job submitted"), 404: NO_SCHEDULE, **WRITES},
    )
    @action(detail=True, methods=["post"])
    def trigger(self, request: Request, name: str | None = None) -> Response:
        user = request.user
        actor = user.actor if isinstance(user, ApiPrincipal) else f"user:{user.get_username()}"
        job = services.schedule_trigger(self.get_object(), actor=actor)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
