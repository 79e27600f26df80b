"""A job type's flow control in effect: what it declared (jobs.handlers.job_type), with the database's
overrides (jobs.models.JobTypeSettings) on top. Read by the workers (jobs.services.flow) and GET /types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import RATE, REGISTRY

RATE_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def rate_interval(rate: str | None) -> float | None:
    """The seconds between two runs at `rate` ("5/s": 0.2), or None for no rate."""
    if not rate:
        return None
    count, period = rate.split("/")
    return RATE_PERIODS[period] / int(count)


def valid_rate(rate: str) -> bool:
    return RATE.fullmatch(rate) is not None


@dataclass(frozen=True)
class Policy:
    """A job type's flow control in effect: declared, with the database's overrides on top."""

    name: str
    max_concurrency: int | None = None
    rate: str | None = None
    limit_by: str | None = None
    paused: bool = False

    @property
    def limited(self) -> bool:
        return self.max_concurrency is not None or self.rate is not None

    @property
    def rate_interval(self) -> float | None:
        return rate_interval(self.rate)


def policy(name: str, row: Any) -> Policy:
    declared = REGISTRY.get(name)
    max_concurrency = declared.max_concurrency if declared else None
    rate = declared.rate if declared else None
    paused = False
    if row is not None:
        max_concurrency = row.max_concurrency if row.max_concurrency_overridden else max_concurrency
        rate = (row.rate or None) if row.rate_overridden else rate
        paused = row.paused
    return Policy(
        name=name,
        max_concurrency=max_concurrency,
        rate=rate,
        limit_by=declared.limit_by if declared else None,
        paused=paused,
    )
