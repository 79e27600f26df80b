"""Concurrency and rate limits, and paused job types, enforced where a worker starts a run.

Before a run starts (jobs.worker.workers), a job whose type is limited asks for a slot in one Lua
script, atomic across every worker:
- concurrency: a sorted set per (type, limit value) of the runs holding a slot, each scored by when
  its slot lapses (the job's timeout + SLOT_GRACE), so a killed worker frees its slot at the latest
  then; sooner in practice, as a slot whose run no longer holds its lease (jobs.redis_store, gone
  10 s after a SIGKILL) is dropped when the next run asks;
- rate: GCRA with a burst of one: a "theoretical arrival time" per (type, limit value), moved on by
  the rate's interval at each run ("5/s": one run every 0.2 s).
The slot is released in the pipeline that writes the run's outcome (jobs.worker.batches).

A job held back (a limit, or its type paused) WAITS as a job with `run_at` does: its row stays
`queued` and untouched (no attempt spent), its RQ job goes to its queue's ScheduledJobRegistry for
the retry-after the limiter computed, and the worker's lease is dropped in the same transaction.
The sentinel finds it scheduled and leaves it alone; RQ's scheduler moves it back when due.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.commands.core import Script

from .. import metrics, redis_store
from ..models import Job
from ..services import Policy
from . import batches

logger = logging.getLogger(__name__)

# A slot outlives its run's timeout by this much before it lapses on its own.
SLOT_GRACE = 30
DEFAULT_TIMEOUT = 180
# How long a job of a paused type, or one waiting for a concurrency slot, waits before it asks again.
PAUSED_RETRY = 5.0
CONCURRENCY_RETRY = 1.0

# KEYS: slots, rate, held. ARGV: job id, max concurrency (0: none), slot lifetime (ms), rate interval
# (ms, 0: none), the lease key prefix. Answers {0, 0} (go), {1, retry ms} (concurrency) or {2, retry ms} (rate).
# It reads the lease keys of the slots' runs, not passed in KEYS: fine on one Redis (not on a cluster).
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max = tonumber(ARGV[2])
if max > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local mine = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not mine and redis.call('ZCARD', KEYS[1]) >= max then
    for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
      if redis.call('EXISTS', ARGV[5] .. member) == 0 then
        redis.call('ZREM', KEYS[1], member)
      end
    end
    if redis.call('ZCARD', KEYS[1]) >= max then
      return {1, tonumber(ARGV[6])}
    end
  end
end
local interval = tonumber(ARGV[4])
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tat > now then
    return {2, tat - now}
  end
  redis.call('SET', KEYS[2], tostring(math.max(tat, now) + interval), 'PX', interval + 1000)
end
if max > 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  -- The set lives as long as its longest slot: never shortened by a run with a shorter timeout.
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  end
end
redis.call('ZREM', KEYS[3], ARGV[1])
return {0, 0}
"""
REASONS = {1: "concurrency", 2: "rate"}

_scripts: dict[int, Script] = {}


def _acquire_script(client: Redis) -> Script:
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(ACQUIRE)
    return script


def limit_suffix(policy: Policy, job: Job) -> str:
    """The part of the limit's keys naming the payload value it applies to (none without `limit_by`)."""
    if not policy.limit_by:
        return ""
    value = job.payload.get(policy.limit_by) if isinstance(job.payload, dict) else None
    # Hashed: a payload value may be long or hold anything; "" for jobs without the field (one shared limit).
    return ":" + hashlib.sha1(str("" if value is None else value).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Decision:
    go: bool
    reason: str = ""
    retry_after: float = 0.0
    slot_key: str | None = None


def acquire(client: Redis, policy: Policy, job: Job, job_id: str) -> Decision:
    """May this run start now? Takes its concurrency slot and its place in the rate when it may."""
    if policy.paused:
        return Decision(go=False, reason="paused", retry_after=PAUSED_RETRY)
    suffix = limit_suffix(policy, job)
    slots = f"{redis_store.FLOW_PREFIX}slots:{policy.name}{suffix}"
    rate = f"{redis_store.FLOW_PREFIX}rate:{policy.name}{suffix}"
    interval = policy.rate_interval
    slot_ms = ((job.timeout or DEFAULT_TIMEOUT) + SLOT_GRACE) * 1000
    answer = _acquire_script(client)(
        keys=[slots, rate, redis_store.held_key(policy.name)],
        args=[
            job_id,
            policy.max_concurrency or 0,
            slot_ms,
            int(interval * 1000) if interval else 0,
            redis_store.LEASE_PREFIX,
            int(CONCURRENCY_RETRY * 1000),
        ],
    )
    code, retry_ms = int(answer[0]), int(answer[1])
    if code == 0:
        return Decision(go=True, slot_key=slots if policy.max_concurrency else None)
    return Decision(go=False, reason=REASONS[code], retry_after=max(retry_ms, 1) / 1000)


def hold(client: Redis, taken: batches.Taken, job: Job, decision: Decision) -> bool:
    """Give the job back to wait `retry_after` in its queue's ScheduledJobRegistry, dropping the lease in the
    same transaction; its row is not touched. False when Redis failed (the lease then lapses and the sentinel
    puts the job back: it is still `queued`)."""
    until = time.time() + decision.retry_after
    key = taken.queue.job_class.key_for(taken.job_id)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(key, "status", "scheduled")
            pipe.zadd(taken.queue.scheduled_job_registry.key, {taken.job_id: until})
            pipe.zadd(redis_store.held_key(job.type), {taken.job_id: until})
            pipe.zremrangebyscore(redis_store.held_key(job.type), "-inf", until - 600)  # long gone
            pipe.expire(redis_store.held_key(job.type), 3600)
            taken.lease.release(via=batches._into(pipe))
            pipe.execute()
    except Exception as error:  # noqa: BLE001 - any Redis failure: the sentinel restores the job
        logger.warning("job %s could not be held (%s): it waits for the sentinel", taken.job_id, error)
        taken.lease.let_expire()
        return False
    with metrics.record() as batch:
        batch.inc("jobs_held_total", job.type, decision.reason)
    logger.debug("job %s held back %.2f s: %s", taken.job_id, decision.retry_after, decision.reason)
    return True


def release(pipe: Any, slot_key: str | None, job_id: str) -> None:
    """The run ended: free its concurrency slot (in the pipeline that records its outcome)."""
    if slot_key:
        pipe.zrem(slot_key, job_id)
