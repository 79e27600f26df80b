"""The OpenAPI schema: valid, and documents every endpoint and the X-API-Key scheme."""

from __future__ import annotations

import pytest
import yaml
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db


def test_schema_validates_and_lists_every_endpoint(anon):
    response = anon.get("/api/schema")

    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    validate(schema)
    operations = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert operations >= {
        ("/jobs/", "get"),
        ("/jobs/", "post"),
        ("/jobs/{job_id}/", "get"),
        ("/jobs/{job_id}/retry/", "post"),
        ("/jobs/{job_id}/cancel/", "post"),
        ("/healthz/", "get"),
        ("/readyz/", "get"),
    }
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schema["components"]["securitySchemes"]["ApiKeyAuth"]["description"],
    }


def test_submit_is_documented_with_its_request_and_refusals(anon):
    schema = yaml.safe_load(anon.get("/api/schema").content)
    submit = schema["paths"]["/jobs/"]["post"]

    assert set(submit["responses"]) >= {"200", "201", "400", "401", "403", "413", "415", "422", "429", "503"}
    assert "Idempotency-Key" in {parameter["name"] for parameter in submit["parameters"]}
    assert {"ApiKeyAuth": []} in submit["security"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"type", "payload", "queue", "delay", "run_at"} <= set(schema["components"]["schemas"][body]["properties"])


def test_swagger_ui_is_served_with_local_assets(anon):
    response = anon.get("/api/docs")

    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower()
