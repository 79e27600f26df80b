"""The project's settings with tests.example_app installed (DJANGO_SETTINGS_MODULE for one test)."""

from sentinelflow_site.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.example_app"]  # noqa: F405
