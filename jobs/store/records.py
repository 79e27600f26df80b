"""What the worker hands the store to record: the outcome of one run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..models import Job, JobStatus


@dataclass
class RunOutcome:
    """The outcome of one run of `job`, written with its start when the start was not recorded yet.

    A short run is recorded once, at its end: the row moves from its runnable status (as read,
    with `attempt - 1` attempts) straight to `target`, and the timeline gets both steps, `started`
    at `started_at` and the outcome at `finished_at`. A run that lasted long enough to have its
    start recorded (`start_recorded`) moves from `started` with `attempt` attempts. Either way it
    is a compare-and-set: a job cancelled, restarted or repaired meanwhile is left alone.
    """

    job: Job
    attempt: int
    started_at: datetime
    finished_at: datetime
    target: str
    actor: str
    start_recorded: bool
    runnable: list[str]
    changes: dict[str, Any] = field(default_factory=dict)
    # Seconds until a `retrying` job runs again (for the worker, which puts it back on Redis).
    retry_in: int | None = None
    # Set by the store when the job moved and has dependents (jobs.services.dependencies releases them).
    has_dependents: bool = False

    def events(self, read_status: str) -> Iterator[tuple[datetime, str, str]]:
        """The timeline rows of this outcome: (at, from, to)."""
        if not self.start_recorded:
            yield self.started_at, read_status, JobStatus.STARTED
        yield self.finished_at, JobStatus.STARTED, self.target
