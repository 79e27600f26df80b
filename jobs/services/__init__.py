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
- flow: pause and resume queues and job types, their limits (audited), the state workers read;
- callbacks: signed completion callbacks, their attempts and retries;
- failures: retry a failure group (type and error fingerprint);
- retention: delete finished jobs past their age, in bounded batches;
- bulk: retry or cancel every job a filter selects, in batches, audited once;
- audit: the audit log's one write (bulk actions, pauses, resumes, changes of limits);
- api_keys: create, revoke, touch.

`from jobs import services; services.job_cancel(...)` keeps working: the public names are here.
"""

from ..exceptions import PermanentJobError
from ..handlers.flow import Policy, policy, valid_rate
from .api_keys import api_key_create, api_key_revoke, api_key_touch, hash_api_key_secret
from .audit import audit_record
from .bulk import BulkResult, jobs_bulk
from .callbacks import callback_deliver, callbacks_due, signature, signing_key_for
from .dependencies import ProgressReporter, dependents_release, waiting_repair
from .enqueue import RUN_JOB
from .failures import failure_group_retry
from .fingerprints import error_fingerprint, fingerprint
from .flow import (
    TYPE_SETTING_FIELDS,
    FlowState,
    UnknownName,
    flow_state,
    forget_flow_state,
    job_type_update,
    job_types_ensure,
    queue_set_paused,
)
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
from .retention import PruneReport, jobs_prune, jobs_prune_count, prunable_jobs
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
    "TYPE_SETTING_FIELDS",
    "BulkResult",
    "FlowState",
    "PermanentJobError",
    "Policy",
    "ProgressReporter",
    "PruneReport",
    "UnknownName",
    "api_key_create",
    "api_key_revoke",
    "api_key_touch",
    "attempts_spent",
    "audit_record",
    "callback_deliver",
    "callbacks_due",
    "cancelled_among",
    "dependents_release",
    "error_fingerprint",
    "failure_group_retry",
    "fingerprint",
    "flow_state",
    "forget_flow_state",
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
    "job_type_update",
    "job_types_ensure",
    "jobs_bulk",
    "jobs_prune",
    "jobs_prune_count",
    "now",
    "policy",
    "prunable_jobs",
    "queue_set_paused",
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
    "signature",
    "signing_key_for",
    "timing_errors",
    "upcoming_ticks",
    "valid_rate",
    "waiting_repair",
    "workflow_cancel",
    "workflow_retry_failed",
    "workflow_submit",
]
