"""django-q2 with its ORM broker: one cluster of 2 worker processes; every success kept (save_limit 0)."""

from bench.peers.base_settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "django_q"]  # noqa: F405
Q_CLUSTER = {
    "name": "bench",
    "orm": "default",
    "workers": 2,
    "save_limit": 0,
    "timeout": 60,
    "retry": 120,
    "log_level": "WARNING",
}
