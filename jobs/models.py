from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


class JobStatus(models.TextChoices):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


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
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
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
        ]
        indexes = [
            models.Index(fields=["status", "-id"], name="job_status_id"),
            models.Index(fields=["type", "-id"], name="job_type_id"),
            models.Index(fields=["queue", "-id"], name="job_queue_id"),
            models.Index(fields=["created_at"], name="job_created_at"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.job_id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
