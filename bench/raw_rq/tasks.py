"""Raw RQ tasks for the reference runs. No Django, no database: the bare cost of RQ."""

from __future__ import annotations

import time


def noop() -> None:
    """Does nothing: drain and submit references."""
    return None


def now() -> float:
    """Returns the time it ran: latency reference (RQ's own enqueued_at/started_at/ended_at are what is read)."""
    return time.time()


def sleep(seconds: float) -> None:
    """I/O-bound reference: blocks without using the CPU."""
    time.sleep(seconds)
