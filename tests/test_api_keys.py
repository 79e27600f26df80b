"""API keys as data: creation, scopes, revocation, throttling, and the create_api_key command."""

from __future__ import annotations

import importlib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from jobs import services
from jobs.models import ApiKey, Job
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def test_created_key_works_and_only_its_hash_is_stored():
    key, full = services.api_key_create(name="billing", scope="write")

    assert full.startswith(f"sf_{key.prefix}_")
    assert full.split("_", 2)[2] not in key.secret_hash
    response = client_with(full).post("/jobs", {"type": "echo"}, format="json")
    assert response.status_code == 201
    assert Job.objects.get().submitted_by == "api-key:billing"
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_revoked_key_is_refused_at_once():
    key, full = services.api_key_create(name="temp")
    client = client_with(full)
    assert client.post("/jobs", {"type": "echo"}, format="json").status_code == 201

    services.api_key_revoke(key=key)

    response = client.post("/jobs", {"type": "echo"}, format="json")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API key."}


@pytest.mark.parametrize("presented", ["sf_nope_nope", "sf_", "random", "sf_abc"])
def test_malformed_or_unknown_keys_are_401(presented):
    services.api_key_create(name="real")

    assert client_with(presented).get("/jobs").status_code == 401


def test_wrong_secret_with_real_prefix_is_401():
    key, _full = services.api_key_create(name="real")

    assert (
        client_with(f"sf_{key.prefix}_wrong-secret").post("/jobs", {"type": "echo"}, format="json").status_code == 401
    )


def test_read_scope_may_read_but_not_write(settings):
    settings.SENTINELFLOW_READS_REQUIRE_KEY = True
    _, full = services.api_key_create(name="dashboards", scope="read")
    client = client_with(full)

    assert client.get("/jobs").status_code == 200
    response = client.post("/jobs", {"type": "echo"}, format="json")
    assert response.status_code == 403
    assert "scope" in response.json()["detail"]
    assert Job.objects.count() == 0


@pytest.mark.parametrize("scope", ["write", "admin"])
def test_write_and_admin_scopes_may_write_and_read(settings, scope):
    settings.SENTINELFLOW_READS_REQUIRE_KEY = True
    _, full = services.api_key_create(name=f"k-{scope}", scope=scope)
    client = client_with(full)

    assert client.post("/jobs", {"type": "echo"}, format="json").status_code == 201
    assert client.get("/jobs").status_code == 200


def test_idempotency_keys_are_per_api_key():
    _, first = services.api_key_create(name="a")
    _, second = services.api_key_create(name="b")

    one = client_with(first).post("/jobs", {"type": "echo"}, format="json", HTTP_IDEMPOTENCY_KEY="same")
    two = client_with(second).post("/jobs", {"type": "echo"}, format="json", HTTP_IDEMPOTENCY_KEY="same")

    assert (one.status_code, two.status_code) == (201, 201)
    assert one.json()["job_id"] != two.json()["job_id"]


@pytest.fixture
def rates(monkeypatch):
    """Set throttle rates for a test (DRF reads them into the throttle class at import)."""

    def set_rates(**rates: str) -> None:
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, **rates})

    return set_rates


def test_throttled_key_gets_429_with_retry_after(rates):
    rates(api_key="3/min", anon="100/s")
    _, full = services.api_key_create(name="noisy")
    _, other = services.api_key_create(name="quiet")
    client = client_with(full)

    statuses = [client.post("/jobs", {"type": "echo"}, format="json").status_code for _ in range(4)]

    assert statuses == [201, 201, 201, 429]
    response = client.post("/jobs", {"type": "echo"}, format="json")
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    assert "throttled" in response.json()["detail"].lower()
    assert Job.objects.count() == 3
    # The budget is per key: another key is not affected.
    assert client_with(other).post("/jobs", {"type": "echo"}, format="json").status_code == 201


def test_anonymous_reads_are_throttled_per_client_but_probes_never(rates, anon):
    rates(api_key="1/min", anon="2/min")

    assert [anon.get("/jobs").status_code for _ in range(3)] == [200, 200, 429]
    assert [anon.get("/healthz").status_code for _ in range(3)] == [200, 200, 200]
    assert anon.get("/readyz").status_code == 200


def test_create_api_key_command_prints_a_working_key():
    out, err = StringIO(), StringIO()

    call_command("create_api_key", "deploy-bot", "--scope", "write", stdout=out, stderr=err)

    full = out.getvalue().strip()
    assert ApiKey.objects.get(name="deploy-bot").scope == "write"
    assert "shown once" in err.getvalue()
    assert client_with(full).post("/jobs", {"type": "echo"}, format="json").status_code == 201


def test_create_api_key_command_refuses_a_duplicate_name():
    services.api_key_create(name="dup")

    with pytest.raises(CommandError, match="already exists"):
        call_command("create_api_key", "dup", stdout=StringIO(), stderr=StringIO())


@pytest.mark.parametrize("name", ["bootstrap", "Bootstrap", " bootstrap "])
def test_no_stored_key_may_take_the_bootstrap_keys_identity(name, client):
    with pytest.raises(CommandError, match="reserved"):
        call_command("create_api_key", name, stdout=StringIO(), stderr=StringIO())
    admin_user = make_user("root", superuser=True)
    client.force_login(admin_user)

    response = client.post("/admin/jobs/apikey/add/", {"name": name, "scope": "write"})

    assert response.status_code == 200 and b"reserved" in response.content
    assert not ApiKey.objects.exists()


def test_a_stored_key_named_bootstrap_before_the_upgrade_gets_its_own_identity(api):
    from django.apps import apps

    migration = importlib.import_module("jobs.migrations.0004_reserve_bootstrap_key_name")
    key = ApiKey.objects.create(name="bootstrap", prefix="abcd1234", secret_hash=services.hash_api_key_secret("s"))
    migration.rename_stored_bootstrap_keys(apps, None)

    stored = client_with("sf_abcd1234_s")
    first = api.post("/jobs", {"type": "echo"}, format="json", HTTP_IDEMPOTENCY_KEY="same")
    second = stored.post("/jobs", {"type": "echo"}, format="json", HTTP_IDEMPOTENCY_KEY="same")

    key.refresh_from_db()
    assert key.name == "bootstrap-abcd1234"
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["job_id"] != second.json()["job_id"]
    assert Job.objects.get(job_id=second.json()["job_id"]).submitted_by == "api-key:bootstrap-abcd1234"
