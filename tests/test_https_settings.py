"""Running behind an HTTPS proxy: the settings read from the environment, and what they change."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

REPO_ROOT = Path(__file__).resolve().parents[1]
HTTPS_ENV = {
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
    "CSRF_TRUSTED_ORIGINS": "https://jobs.example.com",
}


def check_deploy(**extra: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "API_KEY": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": "jobs.example.com",
        **extra,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_https_settings():
    result = check_deploy(**HTTPS_ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_without_them():
    result = check_deploy()

    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr + result.stdout


@pytest.fixture
def behind_proxy(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.CSRF_TRUSTED_ORIGINS = ["https://jobs.example.com"]
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "web.internal"]


@pytest.mark.django_db
def test_admin_login_through_an_https_ingress_on_another_host_passes_csrf(behind_proxy, django_user_model):
    django_user_model.objects.create_user("operator", password="right-pw-12345", is_staff=True)
    client = Client(enforce_csrf_checks=True, HTTP_HOST="web.internal", HTTP_X_FORWARDED_PROTO="https")
    client.get("/admin/login/")

    response = client.post(
        "/admin/login/?next=/admin/",
        {
            "username": "operator",
            "password": "right-pw-12345",
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
        HTTP_ORIGIN="https://jobs.example.com",
        HTTP_REFERER="https://jobs.example.com/admin/login/",
    )

    assert response.status_code == 302, response.content[:300]


@pytest.mark.django_db
def test_an_origin_that_is_not_trusted_still_fails_csrf(behind_proxy, django_user_model):
    client = Client(enforce_csrf_checks=True, HTTP_HOST="web.internal", HTTP_X_FORWARDED_PROTO="https")
    client.get("/admin/login/")

    response = client.post(
        "/admin/login/",
        {"username": "x", "password": "y", "csrfmiddlewaretoken": client.cookies["csrftoken"].value},
        HTTP_ORIGIN="https://evil.example.net",
    )

    assert response.status_code == 403


@pytest.mark.django_db  # /metrics counts the waiting jobs in the database
def test_ssl_redirect_spares_the_probes_and_metrics(settings):
    settings.SECURE_SSL_REDIRECT = True
    client = Client()

    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/jobs").status_code == 301
