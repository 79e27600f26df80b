"""Shared fixtures. The unit suite runs with TESTING=1 (set by tests/testing_mode.py): Redis is an in-process
fakeredis server."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from hypothesis import settings as hypothesis_settings
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

API_KEY = "dev-key"


# CI runs the property tests (hypothesis, schemathesis) on fixed seeds: a red build must mean a change
# broke something, not that a new random example turned up; locally they explore afresh each run.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def pytest_configure(config):
    # The in-process tests need fakeredis; integration tests start their own real services either way.
    if not settings.TESTING:
        raise pytest.UsageError("The test suite runs with TESTING=1: load it with -p tests.testing_mode.")


@pytest.fixture(scope="session", autouse=True)
def _end_sessions_left_on_the_test_database(django_db_setup, django_db_blocker):
    """PostgreSQL refuses to drop a database that a session is still open on, and a thread a test left
    behind (a long poll, a run's recorder) may hold one: end them before pytest-django drops it, so no
    test_<name> database is left over."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def pytest_generate_tests(metafunc):
    if "store_backend" in metafunc.fixturenames:
        from jobs import store

        metafunc.parametrize("store_backend", store.available_backends(), indirect=True)


@pytest.fixture
def store_backend(request, monkeypatch):
    """The test runs once per backend of jobs.store that the test database has: the ORM backend on
    every database, and the single-statement backend too on PostgreSQL."""
    from jobs import store

    backend = store.BACKENDS[request.param]()
    monkeypatch.setattr(store, "_backend", backend)
    return backend


@pytest.fixture(autouse=True)
def _fresh_redis(request):
    """Each unit test starts with an empty fake Redis."""
    if request.node.get_closest_marker("integration"):
        yield
        return
    from jobs import redis_store

    fake_redis = redis_store.connection()
    fake_redis.flushall()
    yield
    fake_redis.flushall()


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def api() -> APIClient:
    """A client that sends the bootstrap API key."""
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=API_KEY)
    return client


@pytest.fixture
def no_backoff(settings):
    """Automatic retries re-enqueue at once, so one burst worker runs every attempt."""
    settings.SENTINELFLOW_RETRY_BACKOFF_BASE = 0


@pytest.fixture
def run_worker():
    """Run the product's burst worker (no fork) in this process over every queue until they are empty."""
    from jobs import redis_store
    from jobs.worker import Worker

    def run() -> None:
        Worker(redis_store.queues(), connection=redis_store.connection()).work(burst=True, logging_level="WARNING")

    return run


@pytest.fixture
def submit(api):
    """POST /jobs and return the JSON body, asserting the 201."""

    def post(body: dict, **headers) -> dict:
        response = api.post("/jobs", body, format="json", **headers)
        assert response.status_code == 201, response.content
        return response.json()

    return post


@pytest.fixture
def metric(anon):
    """metric(name, **labels) -> the current sample value from GET /metrics (0 when absent)."""

    def read(name: str, **labels: str) -> float:
        text = anon.get("/metrics").content.decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    return read
