"""The two task bodies every peer wraps: a no-op (drain, enqueue rates) and a start stamp (latency)."""

from __future__ import annotations

import os
import time


def noop() -> None:
    return None


def stamp(sent: float) -> None:
    """Appends `sent` (the producer's clock before its enqueue call) and how long after it this job
    started, in ms; the driver matches the lines to the jobs it sent by `sent`."""
    started = time.time()
    # One short O_APPEND write per job: lines from the worker processes do not interleave.
    with open(os.environ["PEER_LATENCY_FILE"], "a") as out:
        out.write(f"{sent!r} {(started - sent) * 1000:.3f}\n")
