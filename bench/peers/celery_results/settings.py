"""Celery with django-celery-results: the broker is the bench's private Redis, results go to PostgreSQL."""

import os

from bench.peers.base_settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "django_celery_results"]  # noqa: F405
CELERY_BROKER_URL = os.environ["PEER_REDIS_URL"]
CELERY_RESULT_BACKEND = "django-db"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
