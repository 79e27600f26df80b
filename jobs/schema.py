"""OpenAPI (drf-spectacular) pieces that the views cannot say for themselves."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "jobs.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "The bootstrap API_KEY, or a key made in the admin or with manage.py create_api_key.",
        }


Detail = inline_serializer("Detail", {"detail": serializers.CharField()})


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(Detail, description=description)


FieldErrors = OpenApiResponse(
    {"type": "object", "additionalProperties": True},
    description="Validation failed: each invalid field (or header, or batch index) maps to its messages, "
    'e.g. {"queue": ["Unknown queue ..."]}; or {"detail": "..."} for a body that is not JSON.',
)
