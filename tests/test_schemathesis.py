"""Schemathesis against our own OpenAPI schema: no 5xx, and every response matches the schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from rest_framework.throttling import SimpleRateThrottle
from schemathesis.checks import positive_data_acceptance

from sentinelflow_site.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema", application)


@pytest.fixture(autouse=True)
def _no_throttling(monkeypatch):
    # Hundreds of requests a second from one key: throttling (tested on its own) would answer most of them.
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"api_key": "100000/s", "anon": "100000/s", "invalid_key": "100000/s"}
    )


@pytest.fixture(autouse=True)
def _short_waits(monkeypatch):
    # ?wait= (up to 60 s) is honoured: here the schema is under test, not the wait.
    from jobs import selectors

    for name in ("job_wait", "workflow_wait"):
        wait = getattr(selectors, name)
        monkeypatch.setattr(selectors, name, lambda *, _wait=wait, seconds, **kwargs: _wait(seconds=0.01, **kwargs))


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    # Positive-data acceptance is left out: some rules cannot be said in OpenAPI (a webhook URL on a
    # private address, run_at together with delay) and are refused with a 400 that names the field.
    case.call_and_validate(headers={"X-API-Key": "dev-key"}, excluded_checks=[positive_data_acceptance])
