"""Test data in one place: jobs stored as they would be at some point of their lifecycle, and users.

Defaults are the least a row needs; a test names every field it asserts on.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Permission

from jobs.models import Job, JobStatus

PASSWORD = "pw-12345"
JOB_DEFAULTS: dict[str, Any] = {"type": "echo", "timeout": 60, "status": JobStatus.QUEUED}


def make_job(**fields: Any) -> Job:
    """A stored job: an echo job, queued, unless `fields` say otherwise."""
    return Job.objects.create(**{**JOB_DEFAULTS, **fields})


def make_jobs(count: int, **fields: Any) -> list[Job]:
    return [make_job(**fields) for _ in range(count)]


def make_user(
    username: str, *permissions: str, staff: bool = True, superuser: bool = False, password: str = PASSWORD
) -> AbstractUser:
    """A user (staff by default) holding the jobs app's `permissions`, by codename (`view_job`, `add_job`...)."""
    user = get_user_model().objects.create_user(
        username, password=password, is_staff=staff or superuser, is_superuser=superuser
    )
    if permissions:
        found = Permission.objects.filter(content_type__app_label="jobs", codename__in=permissions)
        assert found.count() == len(set(permissions)), f"unknown permission among {permissions}"
        user.user_permissions.add(*found)
    return user
