"""The admin login and the browsable API's: failed logins are rate-limited per client address and per user name."""

from __future__ import annotations

import pytest
from rest_framework.throttling import SimpleRateThrottle

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator(django_user_model, monkeypatch):
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {**SimpleRateThrottle.THROTTLE_RATES, "login_failure": "3/min"}
    )
    return django_user_model.objects.create_user("operator", password="right-pw-12345", is_staff=True)


def login(client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_guessing_stops_even_for_the_right_password(client, operator):
    assert [login(client, "operator", f"guess-{n}").status_code for n in range(3)] == [200, 200, 200]

    response = login(client, "operator", "right-pw-12345")

    assert response.status_code == 200
    assert b"Too many failed logins" in response.content
    assert "_auth_user_id" not in client.session


def test_spreading_guesses_over_addresses_does_not_help(client, operator):
    for n in range(3):
        login(client, "operator", f"guess-{n}", address=f"198.51.100.{n}")

    response = login(client, "operator", "right-pw-12345", address="198.51.100.200")

    assert b"Too many failed logins" in response.content


def test_guessing_many_users_from_one_address_is_stopped(client, operator, django_user_model):
    for n in range(3):
        login(client, f"user-{n}", "guess")

    assert b"Too many failed logins" in login(client, "operator", "right-pw-12345").content


def test_a_good_login_elsewhere_is_unaffected(client, operator):
    for n in range(3):
        login(client, "someone-else", f"guess-{n}", address="198.51.100.1")

    response = login(client, "operator", "right-pw-12345", address="198.51.100.2")

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(operator.pk)


def api_login(client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post("/api-auth/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_the_browsable_api_login_has_the_same_budget(client, operator):
    assert [api_login(client, "operator", f"guess-{n}").status_code for n in range(3)] == [200, 200, 200]

    response = api_login(client, "operator", "right-pw-12345")

    assert b"Too many failed logins" in response.content
    assert "_auth_user_id" not in client.session


def test_failures_on_one_login_page_count_on_the_other(client, operator):
    for n in range(3):
        api_login(client, "operator", f"guess-{n}")

    assert b"Too many failed logins" in login(client, "operator", "right-pw-12345").content


def test_the_browsable_api_login_lands_on_the_job_list(client, operator):
    response = api_login(client, "operator", "right-pw-12345")

    assert response.status_code == 302
    assert response["Location"] == "/jobs"
    assert client.session["_auth_user_id"] == str(operator.pk)
