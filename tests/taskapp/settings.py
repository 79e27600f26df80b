"""sentinelflow's settings with the test project's views added (its tasks module is listed nowhere)."""

from sentinelflow_site.settings import *  # noqa: F403

ROOT_URLCONF = "tests.taskapp.urls"
