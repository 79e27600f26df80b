"""Schedules: when they fire, and the one job each tick submits.

A tick is submitted by `schedule_fire`, in one transaction: a compare-and-set moves the schedule's
`next_run_at` from the tick to the following one, and the tick's job is inserted. Two sentinels (or one
restarted mid-tick) that both saw the same tick cannot both win the compare-and-set, and a process killed
before the commit leaves neither the job nor the move: one job per tick comes from the database.

Cron expressions are walked by croniter in the schedule's local wall time, then placed on the UTC line
(zoneinfo): a wall time that a daylight-saving change skips fires at the first minute that exists after
it; one that it repeats fires at its first occurrence only. Neither skips nor doubles a tick.

Ticks missed while nothing was running (older than MISFIRE_GRACE when seen) are collapsed: `run_once`
submits one job for the latest of them, `skip` none. Ticks within the grace are each submitted, so a
pass every few seconds still gives a 1 s schedule one job per tick.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterError, croniter
from django.db import transaction
from django.db.models import Q

from .. import metrics
from ..models import Job, Misfire, Schedule
from . import transitions
from .enqueue import push
from .submission import insert_jobs, new_job

logger = logging.getLogger(__name__)

MISFIRE_GRACE = timedelta(seconds=60)
PREVIEW_COUNT = 5
# A wall time skipped by a daylight-saving change fires at the first minute after it that exists.
_MAX_GAP_MINUTES = 24 * 60


def timing_errors(*, cron: str, timezone: str, interval: int | None) -> dict[str, str]:
    """What is wrong with a schedule's timing, by field name; empty when it is valid."""
    errors: dict[str, str] = {}
    if cron and interval is not None:
        errors["interval"] = "Give cron or interval, not both."
    elif not cron and interval is None:
        errors["cron"] = "Give a cron expression or an interval."
    if interval is not None and interval < 1:
        errors["interval"] = "Ensure this value is at least 1."
    if cron:
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            errors["cron"] = f"{cron!r} is not a 5-field cron expression (minute hour day month weekday)."
        elif not _fires(cron):
            errors["cron"] = f"{cron!r} never fires (no such date)."
    if not _known_timezone(timezone):
        errors["timezone"] = f"Unknown time zone {timezone!r}; use an IANA name such as Europe/Berlin."
    return errors


def _fires(cron: str) -> bool:
    """Whether a valid expression has a next date at all (`0 0 31 2 *` has none)."""
    try:
        croniter(cron, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterError:
        return False
    return True


@cache
def _timezone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _known_timezone(name: str) -> bool:
    if name not in _timezone_names():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def ticks_after(schedule: Schedule, moment: datetime) -> Iterator[datetime]:
    """The schedule's ticks strictly after `moment`, in UTC, in order (an interval's ticks are whole seconds
    from `moment`)."""
    if not schedule.cron:
        assert schedule.interval is not None
        tick = moment.astimezone(UTC).replace(microsecond=0)
        while True:
            tick += timedelta(seconds=schedule.interval)
            yield tick
    zone = ZoneInfo(schedule.timezone)
    wall = moment.astimezone(zone).replace(tzinfo=None)
    walls = croniter(schedule.cron, wall)
    previous = moment
    while True:
        tick = _on_utc_line(walls.get_next(datetime), zone)
        if tick > previous:  # two wall times that fall on one instant (a skipped hour) fire once
            previous = tick
            yield tick


def _on_utc_line(wall: datetime, zone: ZoneInfo) -> datetime:
    """A local wall time as a UTC instant: its first occurrence if repeated, the next one that exists if skipped."""
    for minutes in range(_MAX_GAP_MINUTES):
        candidate = (wall + timedelta(minutes=minutes)).replace(tzinfo=zone, fold=0)
        # A wall time that does not exist does not survive the round trip through UTC.
        if candidate.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == candidate.replace(tzinfo=None):
            return candidate.astimezone(UTC)
    raise ValueError(f"no existing wall time near {wall}")  # pragma: no cover  (no zone skips a day)


def next_tick(schedule: Schedule, after: datetime) -> datetime:
    return next(ticks_after(schedule, after))


def upcoming_ticks(schedule: Schedule, *, count: int = PREVIEW_COUNT, after: datetime | None = None) -> list[datetime]:
    """The next `count` fire times from now (or `after`): the admin's preview."""
    ticks = ticks_after(schedule, after or transitions.now())
    return [next(ticks) for _ in range(count)]


def schedule_plan(schedule: Schedule) -> Schedule:
    """Set `next_run_at` from now for the schedule's timing and `enabled` (None while disabled); not saved."""
    schedule.next_run_at = next_tick(schedule, transitions.now()) if schedule.enabled else None
    return schedule


def schedule_set_enabled(schedule: Schedule, *, enabled: bool) -> Schedule:
    """Pause or resume: a resumed schedule starts from its next tick after now (nothing missed is run)."""
    schedule.enabled = enabled
    schedule_plan(schedule)
    schedule.save(update_fields=["enabled", "next_run_at", "updated_at"])
    return schedule


def schedule_trigger(schedule: Schedule, *, actor: str) -> Job:
    """Submit the schedule's job now, outside its ticks ("run now"; also while disabled)."""
    submitted_at = transitions.now()
    with transaction.atomic():
        job = _insert_job(schedule, run_at=submitted_at, submitted_at=submitted_at, actor=actor)
        Schedule.objects.filter(pk=schedule.pk).update(last_run_at=submitted_at, last_job=job)
    transaction.on_commit(lambda: push(job, counts=[("jobs_submitted_total", (job.type,))]))
    schedule.refresh_from_db()
    return job


def schedules_fire_due() -> int:
    """Submit the jobs of every due tick of every enabled schedule; returns how many were submitted."""
    submitted = 0
    now = transitions.now()
    due = Schedule.objects.filter(Q(enabled=True) & Q(next_run_at__lte=now)).order_by("next_run_at", "id")
    for schedule in due:
        try:
            submitted += schedule_fire(schedule, now=now)
        except CroniterError as error:  # validated when saved; one bad row must not stop the others
            logger.error("schedule %s: cannot compute its next tick: %s", schedule.name, error)
    return submitted


def schedule_fire(schedule: Schedule, *, now: datetime) -> int:
    """Submit the due ticks of one schedule (as read, perhaps long ago, by the caller); returns the jobs submitted.

    Each step is its own transaction, a compare-and-set from the `next_run_at` this process saw: one that
    lost it to another process stops here, that process carries on.
    """
    submitted = 0
    seen = schedule.next_run_at
    cutoff = now - MISFIRE_GRACE
    while seen is not None and seen <= now:
        if seen < cutoff:
            # Missed ticks, up to the cutoff: collapsed into one job (run_once) or none (skip).
            latest_missed, following = _missed(schedule, seen, cutoff)
            run_at = latest_missed if schedule.misfire == Misfire.RUN_ONCE else None
        else:
            following, run_at = next_tick(schedule, seen), seen
        job = _advance(schedule, seen=seen, following=following, run_at=run_at)
        if job is False:
            return submitted  # another process moved this schedule on
        if job is not None:
            submitted += 1
        seen = following
    return submitted


def _missed(schedule: Schedule, seen: datetime, cutoff: datetime) -> tuple[datetime, datetime]:
    """The latest tick at or before `cutoff` (from `seen`, a tick before it) and the first one after it."""
    if not schedule.cron:
        assert schedule.interval is not None
        steps = int((cutoff - seen).total_seconds() // schedule.interval)
        latest = seen + timedelta(seconds=steps * schedule.interval)
        return latest, latest + timedelta(seconds=schedule.interval)
    following = next_tick(schedule, cutoff)
    zone = ZoneInfo(schedule.timezone)
    walls = croniter(schedule.cron, following.astimezone(zone).replace(tzinfo=None))
    return max(_on_utc_line(walls.get_prev(datetime), zone), seen), following


def _advance(schedule: Schedule, *, seen: datetime, following: datetime, run_at: datetime | None) -> Any:
    """Move next_run_at from `seen` to `following` and submit the tick's job (if run_at), in one transaction.

    Returns the job, None when no job was due (a skipped misfire), False when another process moved first.
    """
    submitted_at = transitions.now()
    changes: dict[str, Any] = {"next_run_at": following}
    with transaction.atomic():
        moved = Schedule.objects.filter(pk=schedule.pk, enabled=True, next_run_at=seen).update(**changes)
        if not moved:
            return False
        if run_at is None:
            logger.info("schedule %s: ticks up to %s missed, skipped", schedule.name, seen.isoformat())
            return None
        # The row as it is now (locked by the UPDATE): a payload changed since the pass read it counts.
        current = Schedule.objects.get(pk=schedule.pk)
        job = _insert_job(current, run_at=run_at, submitted_at=submitted_at, actor=f"schedule:{schedule.name}")
        Schedule.objects.filter(pk=schedule.pk).update(last_run_at=run_at, last_job=job)
    lag = (submitted_at - run_at).total_seconds()
    counts = [("jobs_submitted_total", (job.type,)), ("schedule_runs_total", (schedule.name,))]

    def enqueue() -> None:
        push(job, counts=counts)
        with metrics.record() as batch:
            batch.observe("schedule_lag_seconds", schedule.name, lag)

    transaction.on_commit(enqueue)
    return job


def _insert_job(schedule: Schedule, *, run_at: datetime, submitted_at: datetime, actor: str) -> Job:
    item = {
        "type": schedule.type,
        "payload": schedule.payload,
        "queue": schedule.queue,
        "max_retries": schedule.max_retries,
        "timeout": schedule.timeout,
        "run_at": run_at,
    }
    job = new_job(item, submitted_at=submitted_at, submitted_by=actor, idempotency_key=None, fingerprint="")
    job.schedule = schedule.name
    insert_jobs([job], at=submitted_at, actor=actor)
    return job


TIMING_FIELDS = frozenset({"cron", "timezone", "interval", "enabled"})


def schedule_create(**fields: Any) -> Schedule:
    """Store a validated schedule, planned from now. IntegrityError when its name is taken (a race)."""
    return schedule_save(Schedule(**fields), changed=None)


def _declare_series(name: str) -> None:
    """Give a new schedule its metric series at zero, so that dashboards see it before it fires."""
    with metrics.record() as batch:
        batch.inc("schedule_runs_total", name, amount=0)


def schedule_update(schedule: Schedule, **changes: Any) -> Schedule:
    """Apply validated changes; a change of timing (or of `enabled`) plans the schedule again from now."""
    for field, value in changes.items():
        setattr(schedule, field, value)
    return schedule_save(schedule, changed=set(changes))


def schedule_save(schedule: Schedule, *, changed: set[str] | None) -> Schedule:
    """Save a schedule whose fields `changed` were set (None: a new one), planned again if its timing changed."""
    if changed is None or TIMING_FIELDS & changed:
        schedule_plan(schedule)
    schedule.save()
    if changed is None:
        transaction.on_commit(lambda: _declare_series(schedule.name))
    return schedule
