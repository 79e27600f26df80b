"""The fingerprint of a failure: its exception class and the stable part of its message, hashed.

5,000 jobs that failed because one downstream service broke carry 5,000 different messages
(`order 1832 timed out after 30.2 s`, `order 1833 ...`): with the numbers, UUIDs, hex strings and
quoted values taken out they are one message, so one group (`GET /failures`, the admin's failure
groups). Computed once, when the attempt fails, and stored on the job: grouping is a GROUP BY.
"""

from __future__ import annotations

import hashlib
import re

FINGERPRINT_LENGTH = 16
# What varies between failures of one cause, replaced in this order (a UUID before its hex and digits).
VARYING = [
    (re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`"), "<q>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
]
# Only the start of a message counts: a long one usually goes on with data, not with its cause.
STABLE_CHARS = 300


def stable_message(message: str) -> str:
    """The message without what varies between failures of one cause."""
    for pattern, replacement in VARYING:
        message = pattern.sub(replacement, message)
    return message.strip()[:STABLE_CHARS]


def fingerprint(kind: str, message: str) -> str:
    """16 hex digits naming the failure `kind: message` up to what varies."""
    stable = f"{kind}: {stable_message(message)}"
    return hashlib.sha256(stable.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def error_fingerprint(error: BaseException) -> str:
    """The fingerprint of an exception: its class (with its module, unless builtin) and stable message."""
    cls = type(error)
    kind = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    return fingerprint(kind, str(error))
