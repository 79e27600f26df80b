"""Domain errors raised by services; sentinelflow_site.exception_handler maps them to HTTP."""

from __future__ import annotations


class JobError(Exception):
    """Base of the errors a service refuses a request with."""

    status_code = 400
    default_detail = "The request was refused."

    def __init__(self, detail: str | None = None):
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class JobNotFound(JobError):
    status_code = 404
    default_detail = "No job with that id."


class InvalidTransition(JobError):
    """The job's current status does not allow the requested change."""

    status_code = 409


class IdempotencyKeyReused(JobError):
    """The same Idempotency-Key came back with a different request body."""

    status_code = 422
    default_detail = "This Idempotency-Key was already used with a different request body."


class CallbackNotSignable(JobError):
    """A callback_url from a submitter without a stored API key: nothing could sign its callbacks."""

    status_code = 400
    default_detail = (
        "callback_url needs a stored API key (made with create_api_key or in the admin after callbacks "
        "existed): its signing secret signs the callbacks. The API_KEY setting's key and sessions have none."
    )


class UniqueKeyContended(JobError):
    """A unique submit kept losing its key to jobs that finished before it could answer with them."""

    status_code = 409
    default_detail = "Jobs with this unique key keep finishing as it is submitted; try again."


class StoreUnavailable(JobError):
    status_code = 503
    default_detail = "The job store is unavailable; nothing was stored. Try again."


class PermanentJobError(Exception):
    """Raised by a handler for a failure that a retry cannot fix; the job fails at once."""


class JobCancelled(Exception):
    """The error a cancelled job shows through Django's Tasks API (its TaskResult is FAILED)."""


class UnknownParents(JobError):
    """depends_on names a job that does not exist."""

    status_code = 400
    default_detail = "depends_on names unknown jobs."


class WorkflowNotFound(JobError):
    status_code = 404
    default_detail = "No workflow with that id."
