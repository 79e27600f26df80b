"""Reads of jobs: lookups and the list filters."""

from __future__ import annotations

import django_filters
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from .exceptions import JobNotFound
from .handlers import job_type_names
from .models import Job, JobStatus


def job_get(*, job_id: str) -> Job:
    try:
        return Job.objects.get(job_id=job_id)
    except (Job.DoesNotExist, ValueError, ValidationError):  # a malformed UUID is "not found" too
        raise JobNotFound() from None


def job_list() -> QuerySet[Job]:
    return Job.objects.all()


class JobFilter(django_filters.FilterSet):
    """GET /jobs filters; an unknown value is a 400 naming the parameter."""

    status = django_filters.ChoiceFilter(choices=JobStatus.choices)
    type = django_filters.ChoiceFilter(choices=lambda: [(name, name) for name in job_type_names()])
    queue = django_filters.ChoiceFilter(choices=lambda: [(name, name) for name in settings.SENTINELFLOW_QUEUES])
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Job
        fields = ["status", "type", "queue", "created_after", "created_before"]
