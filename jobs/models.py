from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone


class JobStatus(models.TextChoices):
    PENDING = "pending"
    # Created with depends_on: it waits for its parents to finish, in the database only (not in Redis).
    WAITING = "waiting"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
_TERMINAL_VALUES = sorted(status.value for status in TERMINAL_STATUSES)


class CallbackStatus(models.TextChoices):
    """Where a job's completion callback stands ("" for a job without `callback_url`)."""

    NONE = "", "none"
    PENDING = "pending"  # to be delivered once the job finishes (again after a manual retry)
    DELIVERED = "delivered"
    FAILED = "failed"  # refused, or every attempt failed: not tried again


# A callback URL as long as a webhook's.
CALLBACK_URL_MAX_LENGTH = 2048


class Workflow(models.Model):
    """A graph of jobs submitted together (POST /workflows); its nodes are Jobs with `workflow` set.

    The overall status is derived from the nodes (jobs.selectors.workflow_summary); `finished_at` and
    `outcome` are set once, by the release that finishes the last node, so it is counted once.
    """

    workflow_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    submitted_by = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)
    outcome = models.CharField(max_length=16, blank=True, default="", editable=False)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"workflow {self.workflow_id}"


class Job(models.Model):
    """The durable record of a job; Redis only holds its place in a queue.

    The integer primary key orders jobs by creation and gives the list
    endpoint a unique cursor; clients only ever see `job_id`.
    """

    job_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    queue = models.CharField(max_length=32, default="default")
    attempts = models.PositiveIntegerField(default=0, help_text="Runs started, across all retries.")
    max_retries = models.PositiveIntegerField(default=3)
    # Attempts made before the current retry budget; a manual retry moves it up to grant a fresh budget.
    budget_start = models.PositiveIntegerField(default=0)
    timeout = models.PositiveIntegerField(help_text="Seconds a single run may take.")
    run_at = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    submitted_by = models.CharField(max_length=100, blank=True, default="")
    # The name of the schedule that submitted the job ("" for a job submitted otherwise).
    schedule = models.CharField(max_length=64, blank=True, default="")
    # Unique jobs (jobs.services.submission): `unique_key` as submitted or derived from the job type,
    # shown for good; `unique_claim` holds the same key while the job may still block a duplicate (a
    # unique index on it covers unfinished jobs only) and is cleared once its window has passed.
    unique_key = models.CharField(max_length=255, null=True, blank=True)
    unique_claim = models.CharField(max_length=255, null=True, blank=True, editable=False)
    unique_until = models.DateTimeField(null=True, blank=True, help_text="End of the unique window; empty: none.")
    tags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Workflows: the graph this job is a node of (and its node name); allow_failure: it runs even when a
    # parent failed or was cancelled (a workflow node's `"run_if": "finished"`).
    # (To the workflow's UUID, so that job.workflow_id is the id clients see.)
    workflow = models.ForeignKey(
        Workflow,
        to_field="workflow_id",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="jobs",
        editable=False,
    )
    node = models.CharField(max_length=64, blank=True, default="")
    allow_failure = models.BooleanField(default=False)
    # Reported by the handler (context.set_progress), throttled; a fraction in [0, 1].
    progress = models.FloatField(null=True, blank=True)
    progress_message = models.CharField(max_length=200, blank=True, default="")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # The failure's class and stable message, hashed (jobs.services.fingerprints): failures group by it.
    error_fingerprint = models.CharField(max_length=16, blank=True, default="", db_default="")
    # A signed POST of the job when it finishes (jobs.services.callbacks); the attempts count deliveries.
    # (Database defaults too, for the store's SQL and for processes of the previous release mid-deploy.)
    callback_url = models.CharField(max_length=CALLBACK_URL_MAX_LENGTH, blank=True, default="", db_default="")
    callback_status = models.CharField(
        max_length=12, choices=CallbackStatus.choices, blank=True, default="", db_default=""
    )
    callback_attempts = models.PositiveIntegerField(default=0, db_default=0)
    # Not before this time may the sentinel send the next attempt (a backoff, or a delivery in flight).
    callback_due_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["submitted_by", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="job_idempotency_key_per_submitter",
            ),
            # One unfinished job per (type, claimed key): the database, not Redis, decides a race of unique
            # submits, on SQLite and PostgreSQL alike. A finished job leaves the index by its status.
            models.UniqueConstraint(
                fields=["type", "unique_claim"],
                condition=Q(unique_claim__isnull=False) & ~Q(status__in=_TERMINAL_VALUES),
                name="job_unique_claim_unfinished",
            ),
        ]
        # Beyond Django's add/view: who may retry and cancel, in the admin and through the API.
        permissions = [("retry_job", "Can retry jobs"), ("cancel_job", "Can cancel jobs")]
        indexes = [
            models.Index(fields=["status", "-id"], name="job_status_id"),
            models.Index(fields=["type", "-id"], name="job_type_id"),
            models.Index(fields=["queue", "-id"], name="job_queue_id"),
            models.Index(fields=["created_at"], name="job_created_at"),
            models.Index(fields=["schedule", "-id"], name="job_schedule_id"),
            # Retention finds finished jobs past their age by status and finish time.
            models.Index(fields=["status", "finished_at"], name="job_status_finished"),
            # Failure groups: GROUP BY type, fingerprint over the failed jobs.
            models.Index(fields=["status", "type", "error_fingerprint"], name="job_failure_group"),
            # The sentinel's look for callbacks to send: only the few pending ones are indexed.
            models.Index(
                fields=["callback_due_at"], name="job_callback_pending", condition=Q(callback_status="pending")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.job_id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def error_summary(self) -> str:
        """The last line of the error: the exception and its message, without the traceback."""
        lines = [line for line in self.error.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class JobDependency(models.Model):
    """An edge of a job graph: `child` waits for `parent` to finish."""

    child = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="parent_links")
    parent = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="child_links")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["child", "parent"], name="jobdependency_unique_edge")]
        indexes = [models.Index(fields=["parent"], name="jobdependency_parent")]

    def __str__(self) -> str:
        return f"{self.parent_id} -> {self.child_id}"


class JobEvent(models.Model):
    """One transition of a job, for the admin's timeline: when, from, to, and who made it."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16)
    actor = models.CharField(max_length=150, blank=True, default="")
    # What happened when the status did not change (a callback delivery attempt and its answer).
    # A database default: the store's SQL (jobs.store.postgres) writes events without naming it.
    note = models.CharField(max_length=500, blank=True, default="", db_default="")

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["job", "at"], name="jobevent_job_at")]

    def __str__(self) -> str:
        change = f"{self.from_status or '∅'} → {self.to_status} by {self.actor}"
        return f"{change}: {self.note}" if self.note else change


class AuditEntry(models.Model):
    """The audit log: one row per operator action, who, when, what, on which target, with its detail.

    Actions are named `<area>.<verb>`: `jobs.bulk_retry`, `jobs.bulk_cancel` (over a filter; each job it
    changed also has its own timeline row, JobEvent, with the same actor); `queue.pause`, `queue.resume`,
    `type.pause`, `type.resume`, `type.limits` (target: the queue's or job type's name).
    """

    at = models.DateTimeField(default=timezone.now, editable=False)
    # 200, not 150: "admin:" or "user:" before a username of up to 150 characters.
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    # The queue or job type acted on; empty when the action names no single target (a bulk action).
    target = models.CharField(max_length=64, blank=True, default="")
    # Bulk: {"filter", "matched", "changed"}; a pause or resume: {"was_paused"}; limits: {"set", "reset", "was"}.
    detail = models.JSONField(default=dict)

    class Meta:
        verbose_name_plural = "audit entries"
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["-at"], name="auditentry_at"),
            # One queue's or type's history, newest first.
            models.Index(fields=["target", "-at"], name="auditentry_target_at"),
        ]

    def __str__(self) -> str:
        on = f" {self.target}" if self.target else ""
        return f"{self.action}{on} by {self.actor} at {self.at:%Y-%m-%d %H:%M:%S}"


class ApiScope(models.TextChoices):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


# What each scope grants: write implies read; admin implies both.
SCOPE_GRANTS = {
    ApiScope.READ: frozenset({"read"}),
    ApiScope.WRITE: frozenset({"read", "write"}),
    ApiScope.ADMIN: frozenset({"read", "write", "admin"}),
}


# The identity of the API_KEY setting's key (actor `api-key:bootstrap`, its throttle budget and its
# idempotency namespace): no stored key may take the name.
BOOTSTRAP_KEY_NAME = "bootstrap"


def validate_api_key_name(name: str) -> None:
    if name.strip().lower() == BOOTSTRAP_KEY_NAME:
        raise ValidationError(f"{name!r} is reserved for the API_KEY setting's key.")


class ApiKey(models.Model):
    """An API key. Only a hash of the secret is stored; the full key is shown once, at creation.

    Keys look like `sf_<prefix>_<secret>`: the prefix is stored in clear to find the row and to
    tell keys apart in the admin; the secret is compared by hash in constant time.
    """

    name = models.CharField(max_length=100, unique=True, validators=[validate_api_key_name])
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    # Signs the key's completion callbacks (HMAC-SHA256; "" for a key made before them). The server must
    # read it, so it is stored as is (unlike the key, which only a hash represents) and shown once, at
    # creation. Whoever can read this table can forge callbacks; they could also change the jobs themselves.
    signing_secret = models.CharField(max_length=64, editable=False, default="", db_default="")
    scope = models.CharField(max_length=8, choices=ApiScope.choices, default=ApiScope.WRITE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (sf_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def scopes(self) -> frozenset[str]:
        return SCOPE_GRANTS[ApiScope(self.scope)]


# Schedule names appear in URLs, metric labels and admin links: a bounded slug, nothing to escape.
SCHEDULE_NAME_MAX_LENGTH = 64
validate_schedule_name = RegexValidator(
    r"\A[A-Za-z0-9_-]{1,64}\Z", "Use 1 to 64 letters, digits, hyphens and underscores."
)


# (Schedule has a field named `timezone`, which hides the module inside its class body.)
_now = timezone.now


class Misfire(models.TextChoices):
    """What a schedule does with ticks missed while nothing was running (see jobs.services.schedules)."""

    RUN_ONCE = "run_once"
    SKIP = "skip"


class Schedule(models.Model):
    """A job submitted on a 5-field cron expression (in `timezone`) or every `interval` seconds.

    `next_run_at` is the next tick (None while disabled); the sentinel submits a tick's job and moves
    `next_run_at` on in one transaction, with a compare-and-set on it: one job per tick, whoever runs it.
    """

    name = models.CharField(max_length=SCHEDULE_NAME_MAX_LENGTH, unique=True, validators=[validate_schedule_name])
    type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=32, default="default")
    max_retries = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the default.")
    timeout = models.PositiveIntegerField(null=True, blank=True, help_text="Seconds; empty: the default.")
    cron = models.CharField(max_length=100, blank=True, default="", help_text="5 fields, e.g. 30 2 * * *")
    timezone = models.CharField(max_length=64, default="UTC", help_text="The cron expression's time zone.")
    interval = models.PositiveIntegerField(null=True, blank=True, help_text="Seconds; instead of cron.")
    enabled = models.BooleanField(default=True)
    misfire = models.CharField(max_length=8, choices=Misfire.choices, default=Misfire.RUN_ONCE)
    next_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, editable=False, related_name="+"
    )
    created_at = models.DateTimeField(default=_now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(cron="") & Q(interval__isnull=False)) | (~Q(cron="") & Q(interval__isnull=True)),
                name="schedule_cron_xor_interval",
            ),
        ]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="schedule_due")]

    def __str__(self) -> str:
        return self.name

    @property
    def expression(self) -> str:
        return f"{self.cron} ({self.timezone})" if self.cron else f"every {self.interval} s"


# --------------------------------------------------------------------------- flow control (pause, limits)

# A rate: a count per second, minute or hour ("10/s", "100/m", "1000/h").
RATE_PATTERN = r"^[1-9][0-9]{0,8}/[smh]$"
validate_rate = RegexValidator(RATE_PATTERN, 'A rate is a count per second, minute or hour: "10/s", "100/m", "1000/h".')


class JobTypeSettings(models.Model):
    """Runtime overrides of a job type's declared flow control (jobs.handlers.job_type), and its pause.

    A limit applies from here only when its `*_overridden` flag is set, so that an override may also
    remove a declared limit (`null`); otherwise the declared value applies.
    """

    name = models.CharField(max_length=64, unique=True)
    max_concurrency = models.PositiveIntegerField(null=True, blank=True, help_text="Runs at once; empty: no limit.")
    max_concurrency_overridden = models.BooleanField(default=False, help_text="Use the value here, not the declared.")
    rate = models.CharField(
        max_length=16, null=True, blank=True, validators=[validate_rate], help_text="e.g. 10/s, 100/m; empty: no limit."
    )
    rate_overridden = models.BooleanField(default=False, help_text="Use the value here, not the declared.")
    paused = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "job type"
        verbose_name_plural = "job types"

    def __str__(self) -> str:
        return self.name


class QueueState(models.Model):
    """Whether a configured queue is paused (workers then take nothing from it; its jobs stay in Redis)."""

    name = models.CharField(max_length=32, unique=True)
    paused = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "queue"

    def __str__(self) -> str:
        return self.name
