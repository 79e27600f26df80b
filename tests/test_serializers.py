"""jobs.api.serializers' shortcuts give exactly what DRF's own field machinery gives.

The submit serializers check the common body without building DRF fields (plain_submission), and
JobSerializer renders with fields built once; each is compared here with the DRF path it skips.
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rest_framework import serializers as drf

from jobs.api import serializers
from jobs.api.serializers import JobBatchSubmitSerializer, JobSerializer, JobSubmitSerializer
from jobs.models import Job, JobStatus
from jobs.services import submission

MISSING = object()
FIELD_VALUES = {
    "type": ["echo", "sleep", "email", "nope", " echo", "echo ", "", "ECHO", 1, None, True, ["echo"], "x" * 70],
    "payload": [MISSING, {}, {"n": 1}, {"seconds": 2}, {"to": "a@example.com"}, [], None, "text", 1, {"x": {1, 2}}],
    "queue": [MISSING, "default", "high", "low", " high", "", "nope", 5, None, True],
    "max_retries": [MISSING, 0, 3, 100, 101, -1, True, False, "3", 3.0, None, "\uff13", 10**30],
    "timeout": [MISSING, 1, 7, 86_400, 86_401, 0, -5, False, "10", 2.5, None],
    "run_at": [MISSING] * 8 + ["2030-01-01T00:00:00Z", "soon"],
    "delay": [MISSING] * 8 + [5, -1],
    "extra": [MISSING] * 8 + [1],
}
# Most bodies should be close to valid, so that many take the shortcut.
for name, common in [("type", "echo"), ("payload", {"n": 2}), ("queue", "high"), ("max_retries", 2), ("timeout", 9)]:
    FIELD_VALUES[name] += [common] * len(FIELD_VALUES[name])
bodies = st.fixed_dictionaries({name: st.sampled_from(values) for name, values in FIELD_VALUES.items()}).map(
    lambda fields: {name: value for name, value in fields.items() if value is not MISSING}
)
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def drf_fields(body: dict):
    """What JobSubmitSerializer's DRF fields make of a body: the values, or the errors."""
    try:
        return drf.Serializer.to_internal_value(JobSubmitSerializer(data=body), body)
    except drf.ValidationError as error:
        return ("errors", error.detail)


def outcome(serializer: drf.Serializer):
    valid = serializer.is_valid()
    return (valid, json.loads(json.dumps(serializer.validated_data if valid else serializer.errors, default=str)))


@PROPERTY
@given(bodies)
def test_plain_submission_is_what_the_fields_give_or_none(body):
    plain = serializers.plain_submission(body)

    event(f"shortcut: {plain is not None}")
    if plain is not None:
        assert plain == drf_fields(body)


@PROPERTY
@given(bodies)
def test_a_submit_validates_as_without_the_shortcut(monkeypatch, body):
    context = {"now": lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}
    fast = outcome(JobSubmitSerializer(data=body, context=context))
    with monkeypatch.context() as patch:
        patch.setattr(serializers, "plain_submission", lambda data: None)
        slow = outcome(JobSubmitSerializer(data=body, context=context))

    assert fast == slow


@PROPERTY
@given(st.lists(bodies | st.sampled_from([None, [], "echo", 1]), min_size=1, max_size=6))
def test_a_batch_validates_as_one_submit_serializer_per_item(monkeypatch, items):
    context = {"now": lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}
    fast = outcome(JobBatchSubmitSerializer(data={"jobs": items}, context=context))
    with monkeypatch.context() as patch:
        patch.setattr(serializers, "plain_submission", lambda data: None)
        slow = outcome(JobBatchSubmitSerializer(data={"jobs": items}, context=context))

    assert fast == slow


def test_the_common_body_takes_the_shortcut():
    assert serializers.plain_submission({"type": "echo", "payload": {"n": 1}}) == {
        "type": "echo",
        "payload": {"n": 1},
        "queue": "default",
    }


# --------------------------------------------------------------------------- JobSerializer

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")


def jobs_in_every_state() -> list[Job]:
    moment = dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=dt.UTC)
    jobs = []
    for index, status in enumerate(JobStatus.values):
        job = submission.new_job(
            {
                "type": "echo",
                "payload": {"n": index, "nested": [1, {"a": None}]},
                "run_at": moment if index % 2 else None,
            },
            submitted_at=moment.astimezone(TOKYO),
            submitted_by="api-key:test",
            idempotency_key=f"key-{index}" if index % 3 else None,
            fingerprint="",
        )
        job.pk = index + 1
        job.status = status
        job.updated_at = moment.replace(microsecond=0)
        job.result = [{"ok": True}, None, "text", 0][index % 4]
        job.error = "Traceback ..." if status == JobStatus.FAILED else ""
        job.started_at = moment if index > 2 else None
        job.finished_at = moment + dt.timedelta(seconds=1) if index > 4 else None
        jobs.append(job)
    return jobs


@pytest.mark.parametrize("time_zone", ["UTC", "Asia/Tokyo", "America/St_Johns"])
def test_job_serializer_renders_as_drf_renders(settings, time_zone):
    settings.TIME_ZONE = time_zone
    for job in jobs_in_every_state():
        drf_rendering = drf.ModelSerializer.to_representation(JobSerializer(), job)

        assert JobSerializer(job).data == drf_rendering
        assert JobSerializer([job], many=True).data == [drf_rendering]
