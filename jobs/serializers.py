from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db import models
from rest_framework import serializers

from .handlers import get_job_type, job_type_names
from .models import Job

MAX_DELAY_SECONDS = 366 * 24 * 3600
MAX_RETRIES_LIMIT = 100
MAX_QUEUE_NAME = 32
LATEST_RUN_AT = dt.datetime.max.replace(microsecond=0, tzinfo=dt.UTC) - dt.timedelta(seconds=1)
SUBMIT_FIELDS = frozenset({"type", "payload", "queue", "max_retries", "timeout", "run_at", "delay"})


class UTCDateTimeField(serializers.DateTimeField):
    """ISO 8601 in UTC, whatever TIME_ZONE says."""

    def __init__(self, **kwargs: Any):
        super().__init__(default_timezone=dt.UTC, **kwargs)


class JobSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DateTimeField: UTCDateTimeField,
    }

    class Meta:
        model = Job
        fields = [
            "job_id",
            "type",
            "payload",
            "status",
            "queue",
            "attempts",
            "max_retries",
            "timeout",
            "run_at",
            "idempotency_key",
            "result",
            "error",
            "created_at",
            "enqueued_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
        read_only_fields = fields


class JobSubmitSerializer(serializers.Serializer):
    """The body of POST /jobs. The payload is validated by the job type's own serializer."""

    type = serializers.CharField(max_length=64)
    payload = serializers.JSONField(required=False, default=dict)
    queue = serializers.CharField(required=False, default="default", max_length=MAX_QUEUE_NAME)
    max_retries = serializers.IntegerField(required=False, min_value=0, max_value=MAX_RETRIES_LIMIT)
    timeout = serializers.IntegerField(required=False, min_value=1)
    run_at = serializers.DateTimeField(required=False, default_timezone=dt.UTC)
    delay = serializers.FloatField(required=False, min_value=0, max_value=MAX_DELAY_SECONDS)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - SUBMIT_FIELDS)
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)

    def validate_type(self, value: str) -> str:
        if get_job_type(value) is None:
            raise serializers.ValidationError(
                f"Unknown job type {value!r}; known types: {', '.join(job_type_names())}."
            )
        return value

    def validate_queue(self, value: str) -> str:
        if value not in settings.SENTINELFLOW_QUEUES:
            raise serializers.ValidationError(
                f"Unknown queue {value!r}; queues: {', '.join(settings.SENTINELFLOW_QUEUES)}."
            )
        return value

    def validate_timeout(self, value: int) -> int:
        if value > settings.SENTINELFLOW_MAX_TIMEOUT:
            raise serializers.ValidationError(f"Ensure this value is at most {settings.SENTINELFLOW_MAX_TIMEOUT}.")
        return value

    def validate_run_at(self, value: dt.datetime) -> dt.datetime:
        # The scheduler rounds run_at up to a whole second: the last second of the calendar would overflow.
        if value > LATEST_RUN_AT:
            raise serializers.ValidationError(f"Ensure this is at most {LATEST_RUN_AT:%Y-%m-%dT%H:%M:%SZ}.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "run_at" in attrs and "delay" in attrs:
            raise serializers.ValidationError({"delay": ["Give run_at or delay, not both."]})
        delay = attrs.pop("delay", None)
        if delay is not None:
            attrs["run_at"] = self.context["now"]() + dt.timedelta(seconds=delay)
        payload_serializer = get_job_type(attrs["type"]).payload_serializer(data=attrs.get("payload"))
        if not payload_serializer.is_valid():
            raise serializers.ValidationError({"payload": payload_serializer.errors})
        attrs["payload"] = payload_serializer.validated_data
        return attrs


MAX_BATCH = 1000


class JobBatchSubmitSerializer(serializers.Serializer):
    """The body of POST /jobs/batch: {"jobs": [submit body, ...]}; every item is validated before any is stored."""

    jobs = serializers.ListField(child=serializers.JSONField(), min_length=1, max_length=MAX_BATCH)

    def validate_jobs(self, items: list[Any]) -> list[dict[str, Any]]:
        validated, errors = [], {}
        for index, item in enumerate(items):
            submit = JobSubmitSerializer(data=item, context=self.context)
            if submit.is_valid():
                validated.append(submit.validated_data)
            else:
                errors[str(index)] = submit.errors
        if errors:
            raise serializers.ValidationError(errors)
        return validated


IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def idempotency_key_from(request, *, max_length: int = MAX_IDEMPOTENCY_KEY_LENGTH) -> str | None:
    """The Idempotency-Key header, if sent; a bad one is a 400 naming the header."""
    value = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if value is None:
        return None
    if not value or len(value) > max_length or not value.isascii() or not value.isprintable():
        raise serializers.ValidationError(
            {IDEMPOTENCY_KEY_HEADER: [f"Use 1 to {max_length} printable ASCII characters."]}
        )
    return value
