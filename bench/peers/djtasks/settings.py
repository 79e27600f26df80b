"""django-tasks (the backport of Django 6's tasks for Django 5.2) with its database backend, django-tasks-db."""

from bench.peers.base_settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks", "django_tasks_db"]  # noqa: F405
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
