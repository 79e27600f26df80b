"""Every write to a job and every state transition, one module per area.

The API, the admin, the worker (jobs.tasks) and the sentinel all call these functions, so each
lifecycle rule lives here once:

- transitions: the lifecycle table, the compare-and-set that applies it, the clock;
- lifecycle: start, succeed, fail an attempt, retry, cancel, the backoff (and the three retry paths);
- runs: the same rules for runs taken in batches by the worker (one write per run, outcomes together);
- submission: new jobs, one or a batch, with Idempotency-Keys;
- enqueue: RQ plumbing (push after the commit, remove on cancel);
- dependencies: jobs that wait for others (depends_on), their release, workflows, progress;
- workflows: a graph of jobs stored at once (POST /workflows), cancelled or retried as a whole;
- repairs: the sentinel's repairs (enqueue pending, recover lost runs, restore what Redis lost);
- schedules: when a schedule fires, and the one job each tick submits;
- api_keys: create, revoke, touch.

`from jobs import services; services.job_cancel(...)` keeps working: the public names are here.
"""

from ..exceptions import PermanentJobError
from .api_keys import api_key_create, api_key_revoke, api_key_touch, hash_api_key_secret
from .dependencies import ProgressReporter, dependents_release, waiting_repair
from .enqueue import RUN_JOB
from .lifecycle import (
    attempts_spent,
    format_error,
    job_cancel,
    job_fail_attempt,
    job_retry,
    job_start,
    job_succeed,
    retry_backoff,
)
from .repairs import RESTORABLE_STATUSES, job_enqueue, job_recover, job_restore
from .runs import START_RECORD_AFTER, cancelled_among, run_begin, run_outcome, run_record_start, runs_claim, runs_finish
from .schedules import (
    schedule_create,
    schedule_plan,
    schedule_save,
    schedule_set_enabled,
    schedule_trigger,
    schedule_update,
    schedules_fire_due,
    timing_errors,
    upcoming_ticks,
)
from .submission import job_submit, job_submit_batch, request_fingerprint
from .transitions import ALLOWED_TRANSITIONS, RUNNABLE_STATUSES, now
from .workflows import workflow_cancel, workflow_retry_failed, workflow_submit

__all__ = [
    "ALLOWED_TRANSITIONS",
    "RESTORABLE_STATUSES",
    "RUNNABLE_STATUSES",
    "RUN_JOB",
    "START_RECORD_AFTER",
    "PermanentJobError",
    "ProgressReporter",
    "api_key_create",
    "api_key_revoke",
    "api_key_touch",
    "attempts_spent",
    "cancelled_among",
    "dependents_release",
    "format_error",
    "hash_api_key_secret",
    "job_cancel",
    "job_enqueue",
    "job_fail_attempt",
    "job_recover",
    "job_restore",
    "job_retry",
    "job_start",
    "job_submit",
    "job_submit_batch",
    "job_succeed",
    "now",
    "request_fingerprint",
    "retry_backoff",
    "run_begin",
    "run_outcome",
    "run_record_start",
    "runs_claim",
    "runs_finish",
    "schedule_create",
    "schedule_plan",
    "schedule_save",
    "schedule_set_enabled",
    "schedule_trigger",
    "schedule_update",
    "schedules_fire_due",
    "timing_errors",
    "upcoming_ticks",
    "waiting_repair",
    "workflow_cancel",
    "workflow_retry_failed",
    "workflow_submit",
]
