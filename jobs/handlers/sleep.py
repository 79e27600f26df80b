from __future__ import annotations

import time
from typing import Any

from rest_framework import serializers

from . import JobContext, job_type

MAX_SLEEP_SECONDS = 3600
# How often a long sleep looks at the database to see whether it was cancelled.
CANCEL_CHECK_INTERVAL = 1.0


class SleepPayload(serializers.Serializer[Any]):
    seconds = serializers.FloatField(min_value=0, max_value=MAX_SLEEP_SECONDS)


@job_type("sleep", payload_serializer=SleepPayload, secret_fields=())
def sleep(payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """Sleep `seconds`, stopping early when the job is cancelled (for workers that cannot kill a job), and
    report the fraction slept as progress (set_progress throttles the writes)."""
    deadline = time.monotonic() + payload["seconds"]
    next_check = time.monotonic() + CANCEL_CHECK_INTERVAL
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(remaining, 0.1))
        if payload["seconds"]:
            slept = payload["seconds"] - max(deadline - time.monotonic(), 0)
            context.set_progress(slept / payload["seconds"], f"slept {slept:.1f} s")
        if time.monotonic() >= next_check:
            if context.is_cancelled():
                return {"slept": round(payload["seconds"] - max(remaining, 0), 3), "cancelled": True}
            next_check += CANCEL_CHECK_INTERVAL
    return {"slept": payload["seconds"]}
