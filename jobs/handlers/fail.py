from __future__ import annotations

from typing import Any

from rest_framework import serializers

from . import JobContext, job_type


class FailPayload(serializers.Serializer[Any]):
    message = serializers.CharField(required=False, default="fail job raised on purpose", max_length=1000)


class DrillFailure(RuntimeError):
    """The error a `fail` job raises."""


@job_type("fail", payload_serializer=FailPayload, secret_fields=())
def fail(payload: dict[str, Any], context: JobContext) -> None:
    """Raise on every attempt: for retry and alerting drills."""
    raise DrillFailure(payload["message"])
