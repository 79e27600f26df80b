from __future__ import annotations

from typing import Any

from rest_framework import serializers

from . import JobContext, job_type


class GatherPayload(serializers.Serializer[Any]):
    """Nothing to give: a gather job's input is its parents' results."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        return data


@job_type("gather", payload_serializer=GatherPayload, secret_fields=())
def gather(payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """Return the results of the job's parents, by node name (by job id for a parent without one), and the
    payload: a fan-in for workflows, and a way to see what a dependent receives."""
    # context.parents has each result under the job id, and under the node name when the parent has one.
    named = {key: value for key, value in context.parents.items() if not _is_job_id(key)}
    parents = named or dict(context.parents)
    return {"parents": parents, "count": len(parents), "payload": payload}


def _is_job_id(key: str) -> bool:
    return len(key) == 36 and key.count("-") == 4
