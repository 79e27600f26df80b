"""The job-type registry.

A job type is a function registered with `@job_type(name, payload_serializer=...)`.
The serializer validates the payload at submit time (a 400 names the field);
the function gets the validated payload and a JobContext when a worker runs it
and returns a JSON-serialisable result. Raising fails the attempt (and retries
it); raising jobs.exceptions.PermanentJobError fails the job at once.

Built-in types live in this package. More are found at start, without editing this project:
- a `job_types` module in any installed Django app (`myapp/job_types.py`), found the way the
  admin finds `admin.py` (django.utils.module_loading.autodiscover_modules);
- the modules named in the SENTINELFLOW_HANDLER_MODULES environment variable (comma-separated
  dotted paths, for code that is not a Django app).

A Django task (`@task`, Django's Tasks API) is a job type without registration: its jobs' type is its
dotted path, and get_job_type makes a type for such a path that runs the task when, and only when, what
the path names is a Task (jobs.handlers.django_task). The HTTP API uses registered_job_type: it never
takes, nor resolves, a task's path.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules
from rest_framework import serializers

from .django_task import TaskPayload, is_task_path, run_task

# A rate as job types and PATCH /types/{name} write it (the same pattern as jobs.models.RATE_PATTERN).
RATE = re.compile(r"[1-9][0-9]{0,8}/[smh]")
BUILT_IN_MODULES = ["echo", "sleep", "fail", "email", "webhook", "gather"]


def _no_progress(fraction: float, message: str = "") -> None:
    return None


@dataclass(frozen=True)
class JobContext:
    """What a running handler may know about its job.

    `parents`: the results of the job's parents (depends_on, a workflow's `after`), by node name and by
    job id; `set_progress(fraction, message)`: report progress in [0, 1] (writes are throttled).
    """

    job_id: str
    attempt: int
    is_cancelled: Callable[[], bool]
    parents: Mapping[str, Any] = field(default_factory=dict)
    set_progress: Callable[..., None] = _no_progress


# The context of the job this thread or task is running: a `@task` function reads its parents through it.
_current: ContextVar[JobContext | None] = ContextVar("sentinelflow_job_context", default=None)


def current_context() -> JobContext | None:
    """The JobContext of the job being run here (None outside a run)."""
    return _current.get()


def parent_results() -> Mapping[str, Any]:
    """The results of the running job's parents, by node name and by job id: for a `@task` function,
    which gets no JobContext (`from jobs.handlers import parent_results`)."""
    context = _current.get()
    return context.parents if context is not None else {}


def run_with_context(job_type: JobType, payload: dict[str, Any], context: JobContext) -> Any:
    """Call a job type's handler with `context` as the current one."""
    token = _current.set(context)
    try:
        return job_type.run(payload, context)
    finally:
        _current.reset(token)


@dataclass(frozen=True)
class JobType:
    name: str
    run: Callable[[dict[str, Any], JobContext], Any]
    payload_serializer: type[serializers.Serializer[Any]]
    # Payload fields hidden from readers without the read scope; None: every field (the default, so a
    # new job type leaks nothing until it says which fields are harmless).
    secret_fields: frozenset[str] | None = None
    # Flow control as declared (jobs.services.flow; the admin and PATCH /types/{name} may override the
    # limits): runs at once across every worker, a rate ("10/s", "100/m", "1000/h"), and the payload
    # field whose values each get limits of their own (per customer, per domain).
    max_concurrency: int | None = None
    rate: str | None = None
    limit_by: str | None = None
    # Unique jobs by default: the payload fields that make the key, and the window in seconds (None: until
    # the job finishes). A submit's own unique_key and unique_for win (jobs.services.submission).
    unique_by: tuple[str, ...] = ()
    unique_for: int | None = None


REGISTRY: dict[str, JobType] = {}


Handler = Callable[[dict[str, Any], JobContext], Any]


def job_type(
    name: str,
    *,
    payload_serializer: type[serializers.Serializer[Any]],
    secret_fields: Iterable[str] | None = None,
    max_concurrency: int | None = None,
    rate: str | None = None,
    limit_by: str | None = None,
    unique_by: Iterable[str] = (),
    unique_for: int | None = None,
) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of job type `name`.

    `secret_fields` names the payload fields that anonymous readers must not see (see
    JobSerializer); left out, the whole payload is hidden from them. `max_concurrency`, `rate` and
    `limit_by` declare the type's flow control (see JobType). `unique_by` names payload
    fields whose values make a default unique key, held for `unique_for` seconds (None: until the job
    finishes); see jobs.services.submission.
    """
    secrets = None if secret_fields is None else frozenset(secret_fields)
    if max_concurrency is not None and max_concurrency < 1:
        raise ImproperlyConfigured(f"job type {name!r}: max_concurrency must be at least 1")
    if rate is not None and not RATE.fullmatch(rate):
        raise ImproperlyConfigured(f'job type {name!r}: rate {rate!r} is not a count per s, m or h ("10/s")')
    unique = (unique_by,) if isinstance(unique_by, str) else tuple(unique_by)
    if unique_for is not None and (not unique or unique_for <= 0):
        raise ValueError(f"job type {name!r}: unique_for needs unique_by and a positive number of seconds")

    def register(run: Handler) -> Handler:
        if name in REGISTRY and REGISTRY[name].run is not run:
            raise ValueError(f"job type {name!r} is already registered")
        REGISTRY[name] = JobType(
            name=name,
            run=run,
            payload_serializer=payload_serializer,
            secret_fields=secrets,
            max_concurrency=max_concurrency,
            rate=rate,
            limit_by=limit_by,
            unique_by=unique,
            unique_for=unique_for,
        )
        return run

    return register


def get_job_type(name: str) -> JobType | None:
    """The job type `name`, for the worker: a registered type, or the Django task at the dotted path `name`.

    A task job type is made without importing anything: the path is resolved when a worker runs the
    job (jobs.handlers.django_task.run_task), which refuses whatever at the path is not a Task.
    """
    registered = REGISTRY.get(name)
    if registered is not None or not is_task_path(name):
        return registered
    return JobType(
        name=name,
        run=lambda payload, context: run_task(name, payload, context.job_id, context.attempt),
        payload_serializer=TaskPayload,
    )


def registered_job_type(name: str) -> JobType | None:
    """The registered job type `name`, or None: what the HTTP API accepts and renders. A Django task's
    path is not one (tasks are enqueued by the project's code, with `.enqueue()`): an API client
    must not make the server import a module it names."""
    return REGISTRY.get(name)


def job_type_names() -> list[str]:
    return sorted(REGISTRY)


# The module that an installed app may ship to register job types, as `admin` is for the admin.
APP_MODULE = "job_types"


def load_handlers() -> None:
    """Import the built-in handler modules, every installed app's `job_types` module and those named in
    SENTINELFLOW_HANDLER_MODULES; a name there that cannot be imported stops the start naming the variable."""
    for module in BUILT_IN_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    autodiscover_modules(APP_MODULE)
    for module in getattr(settings, "SENTINELFLOW_HANDLER_MODULES", []):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name is None or not (module == error.name or module.startswith(f"{error.name}.")):
                raise  # the module exists; something it imports does not
            raise ImproperlyConfigured(
                f"SENTINELFLOW_HANDLER_MODULES names {module!r}, which cannot be imported (is it on the Python path?)"
            ) from None
