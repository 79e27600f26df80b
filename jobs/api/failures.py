"""GET /failures: failed jobs grouped by type and error fingerprint (jobs.services.fingerprints).

A group shows a sample error and traceback, which name server paths and may quote data:
reads need the read scope (a key, or a user with jobs.view_job) whatever READS_REQUIRE_KEY says.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import selectors
from .permissions import scopes_of
from .schema import THROTTLED, FieldErrors, error
from .serializers import MAX_TYPE_NAME, UTCDateTimeField

MAX_GROUPS = 1000


class ReadScope(permissions.BasePermission):
    message = "Failure groups show errors and tracebacks: they need a key (or a user) with the read scope."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return "read" in scopes_of(request)


class FailureGroupSerializer(serializers.Serializer):
    type = serializers.CharField()
    fingerprint = serializers.CharField(help_text="16 hex digits: the exception class and the stable message.")
    count = serializers.IntegerField()
    first_seen = UTCDateTimeField(allow_null=True, help_text="When the oldest failure of the group finished.")
    last_seen = UTCDateTimeField(allow_null=True, help_text="When the newest failure of the group finished.")
    sample_job_id = serializers.UUIDField(allow_null=True)
    sample_error = serializers.CharField(help_text="The newest failure's exception and message (last line).")
    sample_traceback = serializers.CharField()


class FailureQuerySerializer(serializers.Serializer):
    type = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TYPE_NAME)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_GROUPS, default=100)


class FailureGroupsView(APIView):
    """The failure groups, the most recent first."""

    permission_classes = [ReadScope]

    @extend_schema(
        summary="List failure groups",
        parameters=[
            OpenApiParameter("type", str, description="Only this job type's groups."),
            OpenApiParameter("limit", int, description=f"At most this many groups (1 to {MAX_GROUPS}, default 100)."),
        ],
        responses={
            200: OpenApiResponse(
                FailureGroupSerializer(many=True), description="The groups, the one failing most recently first"
            ),
            400: FieldErrors,
            401: error("Missing or unknown API key"),
            403: error("The key (or user) has no read scope"),
            429: THROTTLED,
        },
    )
    def get(self, request: Request) -> Response:
        # A plain dict, not the QueryDict: DRF reads a blank `?limit=` from a form as absent, which it is not.
        query = FailureQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        groups = selectors.failure_groups(
            job_type=query.validated_data.get("type"), limit=query.validated_data["limit"]
        )
        return Response(FailureGroupSerializer(groups, many=True).data)
