"""The API's JSON parser: DRF's, with the limits that keep hostile JSON a 400 instead of a 500.

Whatever parses as JSON must also be storable (PostgreSQL's jsonb and text), renderable
back as strict JSON, and safe to walk recursively (serializers, fingerprints, encoders):
- nesting is capped at MAX_DEPTH levels: `[[[[...]]]]` 100,000 deep would otherwise raise
  RecursionError in the decoder, or later in code that walks the value;
- strings (keys too) may not contain NUL, which PostgreSQL cannot store, nor lone UTF-16
  surrogates (`"\\ud800"`), which are not Unicode and cannot be encoded as UTF-8;
- numbers must be finite: `1e400` parses as infinity, which strict JSON cannot render back;
- an object may not repeat a key (`{"a": 1, "a": 2}`): readers disagree on which one counts.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings as django_settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

MAX_DEPTH = 100


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser plus the checks of this module's docstring; each refusal is a 400 `{"detail": ...}`."""

    def parse(
        self, stream: IO[bytes], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", django_settings.DEFAULT_CHARSET)
        try:
            # DRF's parse, with duplicate keys refused: `{"type": "echo", "type": "webhook"}` means
            # one thing to this parser (the last wins) and another to a proxy or a log reader.
            reader = codecs.getreader(encoding)(stream)
            data = json.load(reader, object_pairs_hook=_object_without_duplicate_keys)  # type: ignore[arg-type]  # reads str
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.") from None
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from None
        problem = json_problem(data)
        if problem:
            raise ParseError(f"JSON parse error - {problem}")
        return data


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or _added(seen, key))
        raise ValueError(f"duplicate key {duplicate!r}.")
    return result


def _added(seen: set[str], key: str) -> bool:
    seen.add(key)
    return False


def json_problem(data: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """What makes parsed JSON unacceptable (see the module docstring), or None. Iterative: no recursion."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels."
            if isinstance(value, dict):
                for key, item in value.items():
                    if problem := _string_problem(key):
                        return problem
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if problem := _string_problem(value):
                return problem
        elif isinstance(value, float) and not math.isfinite(value):
            return "numbers must be finite."
    return None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "strings may not contain NUL (\\u0000)."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "strings may not contain lone surrogates (\\ud800-\\udfff)."
    return None
