from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


class BodySizeLimitMiddleware:
    """Refuse bodies over MAX_BODY_BYTES with a JSON 413, and chunked bodies with a 411, before anything reads them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            # WSGI gives Django no length for a chunked body, so it would read it as empty: a submit
            # would be refused for what it seemed to lack. Say what is wrong instead.
            return JsonResponse(
                {"detail": "Chunked request bodies are not accepted: send a Content-Length."}, status=411
            )
        length = request.META.get("CONTENT_LENGTH") or "0"
        if not (length.isascii() and length.isdigit()):  # isdigit() alone accepts "²", which int() refuses
            return JsonResponse({"detail": "Invalid Content-Length header."}, status=400)
        if int(length) > settings.MAX_BODY_BYTES:
            return JsonResponse(
                {"detail": f"Request body is {length} bytes; the limit is {settings.MAX_BODY_BYTES} bytes."},
                status=413,
            )
        return self.get_response(request)
