"""Procrastinate on PostgreSQL (LISTEN/NOTIFY), through its Django integration."""

from bench.peers.base_settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "procrastinate.contrib.django"]  # noqa: F405
PROCRASTINATE_IMPORT_PATHS = ["bench.peers.procrastinate_pg.tasks"]
