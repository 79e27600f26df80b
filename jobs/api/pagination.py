"""The cursor pagination of GET /jobs, hardened against hostile limits and cursors."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import QuerySet
from rest_framework import exceptions
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.views import APIView


class JobCursorPagination(CursorPagination):
    """Newest first, on the unique creation-ordered primary key: no job is shown twice or skipped."""

    ordering = "-id"
    page_size = 50
    max_page_size = 500
    page_size_query_param = "limit"

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        # ASCII digits only: str.isdigit() also accepts "²" and other digits that int() refuses.
        # Nor are very long numbers handed to int(), which refuses more than 4,300 digits.
        digits = raw.lstrip("0")
        if not re.fullmatch(r"[0-9]+", raw) or not digits:
            raise exceptions.ValidationError({"limit": ["A positive integer is required."]})
        return self.max_page_size if len(digits) > 9 else min(int(digits), self.max_page_size)

    def decode_cursor(self, request: Request) -> Cursor | None:
        cursor = super().decode_cursor(request)
        # The position is compared with the integer primary key: a decodable cursor with another
        # position would fail in the query (a 500); paginate_queryset turns NotFound into a 400.
        if (
            cursor is not None
            and cursor.position is not None
            and not re.fullmatch(r"[0-9]{1,19}", str(cursor.position))
        ):
            raise exceptions.NotFound(self.invalid_cursor_message)
        return cursor

    def paginate_queryset(self, queryset: QuerySet[Any], request: Request, view: APIView | None = None) -> Any:
        try:
            return super().paginate_queryset(queryset, request, view)
        except exceptions.NotFound:
            raise exceptions.ValidationError({"cursor": ["Invalid cursor."]}) from None
