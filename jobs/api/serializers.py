from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, ClassVar
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.http import QueryDict
from rest_framework import serializers
from rest_framework.fields import SkipField
from rest_framework.request import Request

from ..handlers import job_type_names, registered_job_type
from ..handlers.django_task import is_task_path
from ..handlers.webhook import literal_target_error
from ..models import CALLBACK_URL_MAX_LENGTH, Job
from ..selectors import LABEL_KEY, is_label_param

MAX_DELAY_SECONDS = 366 * 24 * 3600
MAX_RETRIES_LIMIT = 100
MAX_QUEUE_NAME = 32
MAX_TYPE_NAME = 64
LATEST_RUN_AT = dt.datetime.max.replace(microsecond=0, tzinfo=dt.UTC) - dt.timedelta(seconds=1)
# Fields that plain_submission leaves to the serializer's fields.
GRAPH_FIELDS = frozenset({"depends_on", "allow_failure"})
LABEL_FIELDS = frozenset({"unique_key", "unique_for", "tags", "metadata"})
SUBMIT_FIELDS = (
    frozenset({"type", "payload", "queue", "max_retries", "timeout", "run_at", "delay", "callback_url"})
    | LABEL_FIELDS
    | GRAPH_FIELDS
)
MAX_PARENTS = 1000
MAX_UNIQUE_KEY = 255
MAX_UNIQUE_FOR = 366 * 24 * 3600
MAX_TAGS = 20
MAX_TAG_LENGTH = 64
MAX_METADATA_KEYS = 20
MAX_METADATA_VALUE_LENGTH = 256
# Metadata keys are those `?metadata.<key>=` can name (selectors.LABEL_KEY): a key never nests.


class StringField(serializers.CharField):
    """A CharField that takes only a JSON string: a key or a tag that was a number is a mistake, not 5 -> "5"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class UTCDateTimeField(serializers.DateTimeField):
    """ISO 8601 in UTC, whatever TIME_ZONE says."""

    def __init__(self, **kwargs: Any):
        super().__init__(default_timezone=dt.UTC, **kwargs)


REDACTED = "[redacted]"


def redacted(job: dict[str, Any]) -> dict[str, Any]:
    """A rendered job as a reader without the read scope sees it: reads are open by default, so
    what may hold secrets or server internals is replaced by "[redacted]": the job type's secret
    payload fields (webhook URL, headers and body; email body; all of a type that names none),
    the result, the error (tracebacks name server paths) and the callback URL (it may carry a token)."""
    job_type = registered_job_type(job.get("type") or "")
    secret = job_type.secret_fields if job_type is not None else None
    payload = job.get("payload")
    if isinstance(payload, dict):
        job["payload"] = {
            name: REDACTED if secret is None or name in secret else value for name, value in payload.items()
        }
    elif payload is not None:
        job["payload"] = REDACTED
    for name in ("result", "error", "callback_url"):
        if job.get(name) not in (None, ""):
            job[name] = REDACTED
    return job


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
            "schedule",
            "callback_url",
            "callback_status",
            "callback_attempts",
            "unique_key",
            "unique_until",
            "tags",
            "metadata",
            "workflow_id",
            "node",
            "allow_failure",
            "progress",
            "progress_message",
            "result",
            "error",
            "created_at",
            "enqueued_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
        read_only_fields = fields

    workflow_id = serializers.UUIDField(read_only=True)

    # Per class (read through cls.__dict__): a subclass builds its own.
    _readable_fields_cache: ClassVar[list[tuple[serializers.Field, str | None]]]

    def to_representation(self, instance: Job) -> dict[str, Any]:
        ret = self._represent(instance)
        return redacted(ret) if self.context.get("redact") else ret

    def _represent(self, instance: Job) -> dict[str, Any]:
        # Building a ModelSerializer's fields (per instance, from the model) costs more than rendering
        # a job, and every submit renders one: render with fields built once per class instead. They
        # are read-only and use no context, so sharing them changes nothing in the output. A Job's
        # model fields are plain attributes: getattr reads them as Field.get_attribute would (it
        # also walks dotted sources, mappings and callables, which a Job's columns are not).
        plain = isinstance(instance, Job)
        ret: dict[Any, Any] = {}
        for field, column in self._shared_readable_fields():
            if plain and column:
                attribute = getattr(instance, column)
            else:
                try:
                    attribute = field.get_attribute(instance)
                except SkipField:
                    continue
            ret[field.field_name] = None if attribute is None else field.to_representation(attribute)
        return ret

    @classmethod
    def _shared_readable_fields(cls) -> list[tuple[serializers.Field, str | None]]:
        """The readable fields, built once, each with the Job attribute it reads when it is a column."""
        fields = cls.__dict__.get("_readable_fields_cache")
        if fields is None:
            columns = {field.name for field in Job._meta.concrete_fields if not field.is_relation}
            fields = [
                (field, field.source if field.source in columns and len(field.source_attrs) == 1 else None)
                for field in cls()._readable_fields
            ]
            cls._readable_fields_cache = fields
        return fields


class JobSubmitSerializer(serializers.Serializer):
    """The body of POST /jobs. The payload is validated by the job type's own serializer."""

    type = serializers.CharField(max_length=MAX_TYPE_NAME)
    payload = serializers.JSONField(required=False, default=dict)
    queue = serializers.CharField(required=False, default="default", max_length=MAX_QUEUE_NAME)
    max_retries = serializers.IntegerField(required=False, min_value=0, max_value=MAX_RETRIES_LIMIT)
    timeout = serializers.IntegerField(required=False, min_value=1)
    run_at = serializers.DateTimeField(required=False, default_timezone=dt.UTC)
    delay = serializers.FloatField(required=False, min_value=0, max_value=MAX_DELAY_SECONDS)
    callback_url = serializers.URLField(required=False, max_length=CALLBACK_URL_MAX_LENGTH)
    unique_key = StringField(required=False, max_length=MAX_UNIQUE_KEY, trim_whitespace=False)
    unique_for = serializers.IntegerField(required=False, min_value=1, max_value=MAX_UNIQUE_FOR)
    tags = serializers.ListField(
        child=StringField(max_length=MAX_TAG_LENGTH, trim_whitespace=False),
        required=False,
        max_length=MAX_TAGS,
    )
    metadata = serializers.DictField(required=False)
    # Job ids this job waits for (it is `waiting` until they have finished); allow_failure: it runs even
    # when one of them failed or was cancelled.
    depends_on = serializers.ListField(
        child=serializers.UUIDField(format="hex_verbose"), required=False, max_length=MAX_PARENTS
    )
    allow_failure = serializers.BooleanField(required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - SUBMIT_FIELDS)
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        plain = plain_submission(data)
        if plain is not None:
            return plain
        return super().to_internal_value(data)

    def run_validators(self, value: Any) -> None:
        # DRF builds every field here to merge read-only defaults for the validators: with no
        # validators there is nothing to run, and the fields need not be built.
        if self.validators:
            super().run_validators(value)

    def validate_type(self, value: str) -> str:
        if registered_job_type(value) is None and is_task_path(value):
            # Only the project's own code (a task's .enqueue()) makes task jobs: the server imports their path.
            raise serializers.ValidationError(
                f"{value!r} is not a job type: a Django task is enqueued by its .enqueue() in the project's code,"
                " not over HTTP."
            )
        if registered_job_type(value) is None:
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

    def validate_callback_url(self, value: str) -> str:
        # As a webhook's URL: http(s) only, and no IP literal or localhost that is never public; a host
        # name is checked again after DNS at each delivery.
        if urlsplit(value).scheme not in {"http", "https"}:
            raise serializers.ValidationError("Only http and https URLs are allowed.")
        if error := literal_target_error(value):
            raise serializers.ValidationError(error.replace("Webhooks", "Callbacks"))
        return value

    def validate_run_at(self, value: dt.datetime) -> dt.datetime:
        # The scheduler rounds run_at up to a whole second: the last second of the calendar would overflow.
        if value > LATEST_RUN_AT:
            raise serializers.ValidationError(f"Ensure this is at most {LATEST_RUN_AT:%Y-%m-%dT%H:%M:%SZ}.")
        return value

    def validate_unique_key(self, value: str) -> str:
        if not value.isprintable() or value != value.strip():
            raise serializers.ValidationError("Use printable characters, without leading or trailing spaces.")
        return value

    def validate_tags(self, value: list[str]) -> list[str]:
        for tag in value:
            if not tag.isprintable() or tag != tag.strip():
                raise serializers.ValidationError(
                    f"Tags are 1 to {MAX_TAG_LENGTH} printable characters, without leading or trailing spaces."
                )
        return list(dict.fromkeys(value))  # in order, once each

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > MAX_METADATA_KEYS:
            raise serializers.ValidationError(f"Ensure this object has at most {MAX_METADATA_KEYS} keys.")
        for key, item in value.items():
            if not LABEL_KEY.match(key) or "__" in key:
                raise serializers.ValidationError(
                    f"Key {key[:80]!r}: a letter, then up to 63 letters, digits, '_' or '-' (no '__')."
                )
            if isinstance(item, str):
                if len(item) > MAX_METADATA_VALUE_LENGTH:
                    raise serializers.ValidationError(
                        f"Key {key!r}: ensure the value has at most {MAX_METADATA_VALUE_LENGTH} characters."
                    )
            elif not isinstance(item, int | float) or (isinstance(item, float) and not math.isfinite(item)):
                raise serializers.ValidationError(
                    f"Key {key!r}: a value is a string, a number or a boolean (the object is flat)."
                )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        job_type = registered_job_type(attrs["type"])
        if "unique_for" in attrs and "unique_key" not in attrs and not (job_type and job_type.unique_by):
            raise serializers.ValidationError(
                {"unique_for": [f"Give unique_key too: job type {attrs['type']!r} declares no default key."]}
            )
        if "run_at" in attrs and "delay" in attrs:
            raise serializers.ValidationError({"delay": ["Give run_at or delay, not both."]})
        delay = attrs.pop("delay", None)
        if delay is not None:
            attrs["run_at"] = self.context["now"]() + dt.timedelta(seconds=delay)
        payload_serializer = payload_serializer_for(attrs)
        if not payload_serializer.is_valid():
            raise serializers.ValidationError({"payload": payload_serializer.errors})
        attrs["payload"] = payload_serializer.validated_data
        if "depends_on" in attrs:
            attrs["depends_on"] = [str(job_id) for job_id in dict.fromkeys(attrs["depends_on"])]
        return attrs


def payload_serializer_for(attrs: dict[str, Any]) -> serializers.Serializer:
    """The job type's own serializer, bound to the payload of a submission."""
    job_type = registered_job_type(attrs["type"])
    assert job_type is not None, attrs["type"]  # validate_type refused unknown types
    return job_type.payload_serializer(data=attrs.get("payload"))


def plain_submission(data: dict[str, Any]) -> dict[str, Any] | None:
    """What JobSubmitSerializer's fields make of `data` when every value is already valid as it stands, else None.

    A batch validates up to 1,000 bodies, and building a DRF serializer's fields costs ~0.1 ms
    each time: the common body (a known type, an object payload, a known queue, in-range
    integers, no run_at or delay) is checked here instead. Anything else returns None and goes
    through the fields, which then give the errors; so the result is always the fields' result.
    """
    if (
        "run_at" in data
        or "delay" in data
        or "callback_url" in data
        or not (LABEL_FIELDS | GRAPH_FIELDS).isdisjoint(data)
    ):
        return None
    job_type = data.get("type")
    if type(job_type) is not str or len(job_type) > MAX_TYPE_NAME or job_type != job_type.strip():
        return None
    if not registered_job_type(job_type):
        return None
    plain: dict[str, Any] = {"type": job_type}
    payload = data.get("payload", serializers.empty)
    if payload is serializers.empty:
        plain["payload"] = {}
    elif type(payload) is dict:
        try:
            json.dumps(payload)  # serializers.JSONField's own check
        except (TypeError, ValueError):
            return None
        plain["payload"] = payload
    else:
        return None
    queue = data.get("queue", "default")
    if type(queue) is not str or queue not in settings.SENTINELFLOW_QUEUES or queue != queue.strip():
        return None
    plain["queue"] = queue
    for name, low, high in (
        ("max_retries", 0, MAX_RETRIES_LIMIT),
        ("timeout", 1, settings.SENTINELFLOW_MAX_TIMEOUT),
    ):
        if name in data:
            value = data[name]
            if type(value) is not int or not low <= value <= high:
                return None
            plain[name] = value
    return plain


MAX_BATCH = 1000


class JobBatchSubmitSerializer(serializers.Serializer):
    """The body of POST /jobs/batch: {"jobs": [submit body, ...]}; every item is validated before any is stored."""

    jobs = serializers.ListField(child=serializers.JSONField(), min_length=1, max_length=MAX_BATCH)

    def validate_jobs(self, items: list[Any]) -> list[dict[str, Any]]:
        validated, errors = [], {}
        for index, item in enumerate(items):
            # The common body needs no serializer of its own (see plain_submission); the payload's
            # is the job type's. Anything else, and every error, goes through JobSubmitSerializer.
            plain = plain_submission(item) if type(item) is dict and item.keys() <= SUBMIT_FIELDS else None
            if plain is not None:
                payload = payload_serializer_for(plain)
                if payload.is_valid():
                    plain["payload"] = payload.validated_data
                    validated.append(plain)
                    continue
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


def idempotency_key_from(request: Request, *, max_length: int = MAX_IDEMPOTENCY_KEY_LENGTH) -> str | None:
    """The Idempotency-Key header, if sent; a bad one is a 400 naming the header."""
    value = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if value is None:
        return None
    if not value or len(value) > max_length or not value.isascii() or not value.isprintable():
        raise serializers.ValidationError(
            {IDEMPOTENCY_KEY_HEADER: [f"Use 1 to {max_length} printable ASCII characters."]}
        )
    return value


# The list's query keys that a bulk action's filter may hold besides tag, metadata.<key> and payload.<key>.
BULK_FILTER_KEYS = frozenset({"status", "type", "queue", "schedule", "created_after", "created_before"})
MAX_BULK_FILTER_VALUES = 10


class BulkActionSerializer(serializers.Serializer):
    """The body of POST /jobs/bulk/retry and /jobs/bulk/cancel: {"filter": {<list query keys>}, "dry_run": false}.

    `filter` becomes the list's query parameters (validated_data["params"], a QueryDict): a value is a
    string, number or boolean, or (for `tag`, or any key repeated) a list of them.
    """

    filter = serializers.DictField(allow_empty=False)
    dry_run = serializers.BooleanField(required=False, default=False)

    def validate_filter(self, value: dict[str, Any]) -> dict[str, Any]:
        errors = {}
        for name, given in value.items():
            if name not in BULK_FILTER_KEYS and not is_label_param(name):
                errors[name[:100]] = ["Unknown filter; use the list's query keys (see GET /jobs)."]
                continue
            values = given if isinstance(given, list) else [given]
            if not 1 <= len(values) <= MAX_BULK_FILTER_VALUES or not all(
                isinstance(item, str | int | float) and not (isinstance(item, float) and not math.isfinite(item))
                for item in values
            ):
                errors[name[:100]] = [
                    f"A string, number or boolean, or a list of 1 to {MAX_BULK_FILTER_VALUES} of them."
                ]
        if errors:
            raise serializers.ValidationError(errors)
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        params = QueryDict(mutable=True)
        for name, given in attrs["filter"].items():
            values = given if isinstance(given, list) else [given]
            params.setlist(name, [_query_text(item) for item in values])
        attrs["params"] = params
        return attrs


def _query_text(value: str | float) -> str:
    """A filter value as the list's query string spells it (true/false for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
