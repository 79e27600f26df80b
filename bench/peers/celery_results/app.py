"""The Celery app: settings from Django (CELERY_*), tasks from bench.peers.celery_results.tasks."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.celery_results.settings")

app = Celery("bench_peer")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.imports = ["bench.peers.celery_results.tasks"]
