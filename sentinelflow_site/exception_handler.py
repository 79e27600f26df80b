"""One place that turns errors into DRF's JSON shapes: {"detail": ...} or field -> messages."""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from jobs.exceptions import JobError, StoreUnavailable

logger = logging.getLogger(__name__)
# How much of an unsupported Content-Type a 415 repeats back.
MEDIA_TYPE_SHOWN = 100


def api_exception_handler(exc, context):
    if isinstance(exc, JobError):
        return Response({"detail": exc.detail}, status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": str(exc)}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, OperationalError | InterfaceError) or type(exc) is DatabaseError:
        logger.error("database unavailable: %s", exc)
        return Response({"detail": StoreUnavailable.default_detail}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    if isinstance(exc, exceptions.NotAuthenticated):
        exc.detail = exceptions.ErrorDetail(
            "Authentication required: send an API key in the X-API-Key header.", code=exc.default_code
        )
    if isinstance(exc, exceptions.UnsupportedMediaType):
        # DRF names only the media type; say what to send instead (a form post is the usual mistake).
        sent = context["request"].content_type or "none"
        sent = sent if len(sent) <= MEDIA_TYPE_SHOWN else sent[:MEDIA_TYPE_SHOWN] + "..."
        exc.detail = exceptions.ErrorDetail(
            f'Send the body as JSON, with the header Content-Type: application/json (not "{sent}").',
            code=exc.default_code,
        )
    return exception_handler(exc, context)


def bad_request(request, exception=None):
    return JsonResponse({"detail": "Bad request."}, status=400)


def not_found(request, exception=None):
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request):
    return JsonResponse({"detail": "Internal server error."}, status=500)
