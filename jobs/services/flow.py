"""Flow control: pausing queues and job types, and their concurrency and rate limits.

The database holds the state (JobTypeSettings, QueueState: a Redis flush loses none of it); every
change is audited in the one audit log (AuditEntry, actions `queue.pause`, `type.limits`, ...). Workers
read it through `flow_state()`, cached for FLOW_STATE_TTL seconds per process, and enforce it in Redis
(jobs.worker.limits).

A job type's limits are declared with `@job_type(max_concurrency=..., rate=..., limit_by=...)`; a
JobTypeSettings row overrides a limit only where its `*_overridden` flag is set, so that an override
of `None` removes a declared limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction

from ..exceptions import JobError
from ..handlers import REGISTRY, registered_job_type
from ..handlers.flow import Policy, policy
from ..models import JobTypeSettings, QueueState
from .audit import audit_record

logger = logging.getLogger(__name__)

# How long a worker process trusts the state it read: a pause or a new limit takes effect within this.
FLOW_STATE_TTL = 1.0


class UnknownName(JobError):
    status_code = 404
    default_detail = "Not found."


@dataclass(frozen=True)
class FlowState:
    """What a worker needs on its hot path: paused queues, and the types that are paused or limited."""

    paused_queues: frozenset[str] = frozenset()
    policies: dict[str, Policy] = field(default_factory=dict)  # only the paused or limited types
    read_at: float = 0.0

    def policy_for(self, job_type: str) -> Policy | None:
        return self.policies.get(job_type)


def read_flow_state() -> FlowState:
    """Two small queries: the paused queues, and every type's overrides."""
    paused = frozenset(QueueState.objects.filter(paused=True).values_list("name", flat=True))
    rows = {row.name: row for row in JobTypeSettings.objects.all()}
    policies = {}
    for name in set(REGISTRY) | set(rows):
        found = policy(name, rows.get(name))
        if found.paused or found.limited:
            policies[name] = found
    return FlowState(paused_queues=paused, policies=policies, read_at=time.monotonic())


_cached = FlowState()
_cache_lock = threading.Lock()


def flow_state(*, fresh: bool = False) -> FlowState:
    """The flow state, read at most once per FLOW_STATE_TTL per process (the worker's threads share it).
    A database that fails keeps the last state read: a pause must not lapse because a query failed."""
    global _cached
    if not fresh and time.monotonic() - _cached.read_at < FLOW_STATE_TTL:
        return _cached
    with _cache_lock:
        if not fresh and time.monotonic() - _cached.read_at < FLOW_STATE_TTL:
            return _cached
        try:
            _cached = read_flow_state()
        except DatabaseError as error:
            logger.warning("flow state not read (%s); the last one read stays in effect", error)
            _cached = FlowState(_cached.paused_queues, _cached.policies, read_at=time.monotonic())
        return _cached


def forget_flow_state() -> None:
    """Drop this process's cached state (after a change made here, and in tests)."""
    global _cached
    _cached = FlowState()


# --------------------------------------------------------------------------- writes


def _audit(*, actor: str, kind: str, target: str, verb: str, detail: dict[str, Any]) -> None:
    """`kind` is "queue" or "type": the entry's action is `queue.pause`, `type.limits`, ..."""
    audit_record(actor=actor, action=f"{kind}.{verb}", target=target, detail=detail)


def queue_set_paused(*, name: str, paused: bool, actor: str) -> QueueState:
    """Pause or resume a configured queue (UnknownName otherwise); audited, even when nothing changes."""
    if name not in settings.SENTINELFLOW_QUEUES:
        raise UnknownName(f"No queue named {name!r} is configured.")
    with transaction.atomic():
        state, _created = QueueState.objects.select_for_update().get_or_create(name=name)
        was = state.paused
        state.paused = paused
        state.save(update_fields=["paused", "updated_at"])
        _audit(actor=actor, kind="queue", target=name, verb="pause" if paused else "resume", detail={"was_paused": was})
    forget_flow_state()
    return state


# PATCH /types/{name}'s fields, and the admin's.
TYPE_SETTING_FIELDS = ("max_concurrency", "rate", "paused")


def job_type_update(*, name: str, changes: dict[str, Any], actor: str, reset: Iterable[str] = ()) -> JobTypeSettings:
    """Change a registered job type's limits (None removes one, declared or not) or pause it; audited.

    `changes` holds any of TYPE_SETTING_FIELDS, already validated (a rate matches RATE); `reset` names the
    limits that go back to their declared values."""
    reset = [limit for limit in reset if limit in ("max_concurrency", "rate")]
    if registered_job_type(name) is None:
        raise UnknownName(f"No job type named {name!r}.")
    unknown = set(changes) - set(TYPE_SETTING_FIELDS)
    if unknown:
        raise ValueError(f"not settings of a job type: {sorted(unknown)}")
    with transaction.atomic():
        row, _created = JobTypeSettings.objects.select_for_update().get_or_create(name=name)
        before = {"max_concurrency": row.max_concurrency, "rate": row.rate, "paused": row.paused}
        if "max_concurrency" in changes:
            row.max_concurrency, row.max_concurrency_overridden = changes["max_concurrency"], True
        if "rate" in changes:
            row.rate, row.rate_overridden = changes["rate"] or None, True
        if "paused" in changes:
            row.paused = bool(changes["paused"])
        for limit in reset:
            setattr(row, limit, None)
            setattr(row, f"{limit}_overridden", False)
        row.full_clean()
        row.save()
        if "paused" in changes:
            _audit(
                actor=actor,
                kind="type",
                target=name,
                verb="pause" if row.paused else "resume",
                detail={"was_paused": before["paused"]},
            )
        limits: dict[str, Any] = {key: value for key, value in changes.items() if key != "paused"}
        if limits or reset:
            detail = {"set": limits, "reset": sorted(reset), "was": before}
            _audit(actor=actor, kind="type", target=name, verb="limits", detail=detail)
    forget_flow_state()
    return row


def job_types_ensure() -> None:
    """A settings row for every registered job type, and a state row for every configured queue (for the admin's
    lists; the rows say nothing until changed)."""
    from ..handlers import job_type_names

    for name in job_type_names():
        JobTypeSettings.objects.get_or_create(name=name)
    for name in settings.SENTINELFLOW_QUEUES:
        QueueState.objects.get_or_create(name=name)
