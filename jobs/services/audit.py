"""The audit log (AuditEntry): one row per operator action, written by the service that acts.

Bulk retries and cancels (jobs.services.bulk) and every pause, resume and change of limits of a queue
or job type (jobs.services.flow) land in the same table, so the admin shows them in one list.
"""

from __future__ import annotations

import logging
from typing import Any

from ..models import AuditEntry
from . import transitions

logger = logging.getLogger(__name__)


def audit_record(*, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None) -> AuditEntry:
    """Write one entry; `action` is `<area>.<verb>` (`queue.pause`, `jobs.bulk_cancel`), `target` the name acted
    on or empty. Inside a caller's transaction (flow's), the entry commits or rolls back with the change."""
    entry = AuditEntry.objects.create(
        at=transitions.now(), actor=actor, action=action, target=target, detail=detail or {}
    )
    logger.info("audit: %s %s%s %s", actor, action, f" {target}" if target else "", entry.detail or "")
    return entry
