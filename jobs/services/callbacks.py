"""Signed completion callbacks: when a job with a `callback_url` finishes, POST its JSON there.

The request carries `X-Sentinelflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`,
keyed with the signing secret of the API key that submitted the job (ApiKey.signing_secret), so
the receiver can tell the POST came from here, unaltered, and recently (it checks `t`).

Delivery stays out of the worker's hot path: the outcome's commit enqueues an RQ job
(`jobs.tasks.deliver_callback`, run by RQ's own code on the job's queue) for attempt 1. Each attempt
is claimed by a compare-and-set on `callback_attempts` (n - 1 -> n), so an attempt enqueued twice
(by the worker and by the sentinel) is sent once. A failed attempt sets `callback_due_at` to now plus
the backoff; the sentinel enqueues every pending callback that is due (`callbacks_due`): retries,
a first attempt whose RQ job was lost (Redis down at the commit), and an attempt whose process
died mid-send (its claim lapses after CLAIM_SECONDS). Each attempt writes a timeline row (a
JobEvent with actor `callback` and a note: its answer, or why it failed).

Targets are checked as webhooks' are (jobs.handlers.webhook.check_target: no loopback, private,
link-local or reserved address, after DNS, and the request goes to the checked address); a
refused target is given up at once. Redirects are not followed: a 3xx is a failed attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from redis.exceptions import RedisError

from .. import metrics, redis_store
from ..handlers.webhook import WebhookTargetRefused, check_target, send
from ..models import TERMINAL_STATUSES, ApiKey, CallbackStatus, Job, JobEvent
from . import transitions

logger = logging.getLogger(__name__)

DELIVER_CALLBACK = "jobs.tasks.deliver_callback"
SIGNATURE_HEADER = "X-Sentinelflow-Signature"
# An attempt in flight holds the callback this long: past it, the sentinel sends the next attempt.
CLAIM_SECONDS = 120
# A first attempt is the worker's to send: the sentinel sends it only when it has not gone after this long.
FIRST_ATTEMPT_GRACE = timedelta(seconds=30)
# Once the sentinel has enqueued an attempt, it waits this long before it enqueues it again.
REQUEUE_AFTER = timedelta(seconds=60)
API_KEY_ACTOR_PREFIX = "api-key:"
FINISHED = sorted(TERMINAL_STATUSES)


def signing_key_for(submitted_by: str) -> ApiKey | None:
    """The stored API key whose name the submitter's actor (`api-key:NAME`) carries, with a signing secret."""
    if not submitted_by.startswith(API_KEY_ACTOR_PREFIX):
        return None
    name = submitted_by.removeprefix(API_KEY_ACTOR_PREFIX)
    return ApiKey.objects.filter(name=name).exclude(signing_secret="").first()


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Sentinelflow-Signature value for `body` sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _utc(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def job_document(job: Job) -> dict[str, Any]:
    """The job as the API shows it to its submitter (GET /jobs/{id} with the read scope)."""
    return {
        "job_id": str(job.job_id),
        "type": job.type,
        "payload": job.payload,
        "status": job.status,
        "queue": job.queue,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "timeout": job.timeout,
        "run_at": _utc(job.run_at),
        "idempotency_key": job.idempotency_key,
        "schedule": job.schedule,
        "result": job.result,
        "error": job.error,
        "created_at": _utc(job.created_at),
        "enqueued_at": _utc(job.enqueued_at),
        "started_at": _utc(job.started_at),
        "finished_at": _utc(job.finished_at),
        "updated_at": _utc(job.updated_at),
    }


def callback_backoff(attempt: int) -> float:
    """Seconds after failed attempt `attempt` (1-based) before the next: base * 2**(n-1), capped."""
    base = settings.SENTINELFLOW_CALLBACK_BACKOFF_BASE
    return float(min(settings.SENTINELFLOW_CALLBACK_BACKOFF_MAX, base * 2 ** (attempt - 1)))


# --------------------------------------------------------------------------- enqueueing attempts


def callback_reset(job: Job) -> dict[str, Any]:
    """The changes that make a retried job's callback pending again: it reports its next outcome too."""
    if not job.callback_url:
        return {}
    return {"callback_status": CallbackStatus.PENDING, "callback_attempts": 0, "callback_due_at": None}


def callbacks_after_finish(jobs: Iterable[Job]) -> None:
    """Send attempt 1 of the callbacks of jobs that just finished, once their outcome is committed."""
    waiting = [
        (str(job.job_id), job.queue, 1)
        for job in jobs
        if job.callback_url and job.callback_status == CallbackStatus.PENDING
    ]
    if waiting:
        # After the commit: the delivery reads the finished row.
        transaction.on_commit(lambda: enqueue_attempts(waiting))


def enqueue_attempts(attempts: list[tuple[str, str, int]]) -> int:
    """Put delivery attempts (job id, queue, attempt number) on RQ; how many (0 when Redis refuses: the
    sentinel sends them later)."""
    try:
        with redis_store.connection().pipeline() as pipe:
            for job_id, queue_name, attempt in attempts:
                queue = redis_store.queue(queue_name)
                queue.enqueue_call(
                    DELIVER_CALLBACK,
                    args=(job_id, attempt),
                    job_id=f"callback-{job_id}-{attempt}",
                    result_ttl=settings.SENTINELFLOW_RQ_RESULT_TTL,
                    failure_ttl=settings.SENTINELFLOW_RQ_RESULT_TTL,
                    timeout=int(settings.SENTINELFLOW_WEBHOOK_TIMEOUT * 3) + 10,
                    pipeline=pipe,
                )
            pipe.execute()
    except RedisError as error:
        logger.warning("callbacks: %d attempt(s) not enqueued, the sentinel sends them: %s", len(attempts), error)
        return 0
    return len(attempts)


def callbacks_due(*, now: datetime | None = None, limit: int = 500) -> int:
    """The sentinel's part: enqueue the attempts of pending callbacks that are due; returns how many.

    Due: a finished job whose first attempt has not gone FIRST_ATTEMPT_GRACE after it finished,
    or whose next attempt's time (a backoff, or a lapsed claim) has come. Each is marked with
    REQUEUE_AFTER (compare-and-set) so that a slow queue does not get it again every pass.
    """
    now = now or transitions.now()
    pending = Job.objects.filter(callback_status=CallbackStatus.PENDING, status__in=FINISHED)
    due = pending.filter(
        Q(callback_due_at__lte=now) | Q(callback_due_at__isnull=True, finished_at__lt=now - FIRST_ATTEMPT_GRACE)
    ).only("pk", "job_id", "queue", "callback_attempts", "callback_due_at")[:limit]
    attempts = []
    for job in due:
        marked = Job.objects.filter(
            pk=job.pk, callback_attempts=job.callback_attempts, callback_due_at=job.callback_due_at
        ).update(callback_due_at=now + REQUEUE_AFTER)
        if marked:
            attempts.append((str(job.job_id), job.queue, job.callback_attempts + 1))
    return enqueue_attempts(attempts) if attempts else 0


# --------------------------------------------------------------------------- one attempt


def callback_deliver(*, job_id: str, attempt: int) -> str:
    """Send attempt `attempt` of a job's callback, if it is still pending and this attempt is not claimed
    yet; record it on the job and its timeline. Returns what happened (for the logs)."""
    now = transitions.now()
    claimed = Job.objects.filter(
        job_id=job_id, status__in=FINISHED, callback_status=CallbackStatus.PENDING, callback_attempts=attempt - 1
    ).update(callback_attempts=attempt, callback_due_at=now + timedelta(seconds=CLAIM_SECONDS))
    if not claimed:
        return "not pending, or this attempt was sent already"
    job = Job.objects.get(job_id=job_id)
    key = signing_key_for(job.submitted_by)
    if key is None:
        return _record(job, attempt, delivered=False, note="no signing key: the API key that submitted it is gone")
    body = json.dumps(job_document(job), cls=DjangoJSONEncoder, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "sentinelflow-callback",
        "X-Sentinelflow-Job": str(job.job_id),
        SIGNATURE_HEADER: signature(key.signing_secret, body, int(time.time())),
    }
    try:
        answer = send(check_target(job.callback_url), method="POST", body=body, headers=headers)
    except WebhookTargetRefused as error:
        return _record(job, attempt, delivered=False, note=f"refused: {error}", final=True)
    except Exception as error:  # noqa: BLE001 - any failure to reach the receiver is a failed attempt
        return _record(job, attempt, delivered=False, note=f"{type(error).__name__}: {error}")
    if 200 <= answer.status < 300:
        return _record(job, attempt, delivered=True, note=f"HTTP {answer.status}")
    return _record(job, attempt, delivered=False, note=f"HTTP {answer.status}: {answer.text[:200]}")


def _record(job: Job, attempt: int, *, delivered: bool, note: str, final: bool = False) -> str:
    """Write the attempt's outcome (only over this attempt's claim) and its timeline row."""
    now = transitions.now()
    gave_up = not delivered and (final or attempt >= settings.SENTINELFLOW_CALLBACK_MAX_ATTEMPTS)
    if delivered:
        changes: dict[str, Any] = {"callback_status": CallbackStatus.DELIVERED, "callback_due_at": None}
        text, outcome = f"callback attempt {attempt} delivered: {note}", "delivered"
    elif gave_up:
        changes = {"callback_status": CallbackStatus.FAILED, "callback_due_at": None}
        text, outcome = f"callback attempt {attempt} failed: {note}; given up", "gave_up"
    else:
        delay = callback_backoff(attempt)
        changes = {"callback_due_at": now + timedelta(seconds=delay)}
        text, outcome = f"callback attempt {attempt} failed: {note}; next in {delay:g} s", "retrying"
    with transaction.atomic():
        Job.objects.filter(pk=job.pk, callback_status=CallbackStatus.PENDING, callback_attempts=attempt).update(
            **changes
        )
        JobEvent.objects.create(
            job_id=job.pk, at=now, from_status=job.status, to_status=job.status, actor="callback", note=text[:500]
        )
    with metrics.record() as batch:
        batch.inc("jobs_callback_attempts_total", job.type, outcome)
    logger.info("job %s: %s", job.job_id, text)
    return text
