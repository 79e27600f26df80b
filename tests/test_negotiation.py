"""The API's content negotiation picks what DRF's own would, for every kind of Accept header."""

from __future__ import annotations

import pytest
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from jobs.api.negotiation import JsonFirstNegotiation

RENDERERS = [JSONRenderer(), BrowsableAPIRenderer()]


@pytest.mark.parametrize(
    ("accept", "query", "suffix"),
    [
        (None, "", None),
        ("*/*", "", None),
        ("application/json", "", None),
        ("application/json; indent=4", "", None),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "", None),
        ("text/html", "", None),
        ("*/*", "?format=api", None),
        ("application/json", "?format=api", None),
        (None, "", "api"),
        ("*/*", "", "json"),
    ],
)
def test_the_choice_is_drfs(accept, query, suffix):
    headers = {"HTTP_ACCEPT": accept} if accept is not None else {}
    request = Request(APIRequestFactory().get(f"/jobs{query}", **headers))

    def choice(negotiation):
        try:
            renderer, media_type = negotiation.select_renderer(request, RENDERERS, suffix)
        except NotAcceptable:
            return "406"
        return type(renderer), media_type

    assert choice(JsonFirstNegotiation()) == choice(DefaultContentNegotiation())


@pytest.mark.django_db
def test_a_browser_gets_the_browsable_api_and_a_client_json(client):
    assert client.get("/jobs", HTTP_ACCEPT="text/html").headers["Content-Type"].startswith("text/html")
    assert client.get("/jobs").headers["Content-Type"] == "application/json"
    assert client.get("/jobs?format=api", HTTP_ACCEPT="*/*").headers["Content-Type"].startswith("text/html")
