from __future__ import annotations

from typing import Any

from rest_framework import serializers

from . import JobContext, job_type


class EchoPayload(serializers.Serializer[Any]):
    """Any JSON object; it comes back as the result."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        return data


@job_type("echo", payload_serializer=EchoPayload, secret_fields=())
def echo(payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """Return the payload unchanged: a no-op for smoke tests and benchmarks."""
    return payload
