"""The operator console: jobs, their timelines, workflows and their graphs, API keys, schedules, job types and
queues (pause, limits), the audit log (bulk actions, pauses, limits), and the dashboard."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from rest_framework.exceptions import ValidationError as DRFValidationError

from . import selectors, services
from .api.throttling import LoginFailureThrottle
from .graph_svg import render as render_graph
from .handlers import get_job_type, job_type_names
from .models import (
    ApiKey,
    AuditEntry,
    Job,
    JobStatus,
    JobTypeSettings,
    QueueState,
    Schedule,
    Workflow,
)

FAILURE_GROUPS_SHOWN = 200
STATUS_COLOURS: dict[str, str] = {
    JobStatus.PENDING: "#8a6d3b",
    JobStatus.WAITING: "#adb5bd",
    JobStatus.SCHEDULED: "#6f42c1",
    JobStatus.QUEUED: "#0d6efd",
    JobStatus.STARTED: "#0dcaf0",
    JobStatus.RETRYING: "#fd7e14",
    JobStatus.SUCCEEDED: "#198754",
    JobStatus.FAILED: "#dc3545",
    JobStatus.CANCELLED: "#6c757d",
}


def status_badge(status: str) -> SafeString:
    return format_html(
        '<span class="sf-badge" style="background:{};color:#fff;padding:2px 8px;border-radius:10px">{}</span>',
        STATUS_COLOURS.get(status, "#444"),
        status,
    )


def pretty_json(value: Any) -> SafeString:
    return format_html("<pre style='white-space:pre-wrap;margin:0'>{}</pre>", json.dumps(value, indent=2))


# The changelist lookups the filters of the job and key lists make; any other `?field__lookup=` in
# a changelist URL is refused as the admin refuses lookups it does not allow (a 400), instead of
# reaching a database that may not support it (`payload__contains` on SQLite was a 500).
CHANGELIST_LOOKUPS = frozenset({"exact", "iexact", "in", "isnull", "isempty", "gte", "gt", "lt", "lte"})


def filter_lookup_allowed(lookup: str, fields: frozenset[str]) -> bool:
    field, _, operator = lookup.partition("__")
    return field in fields and (not operator or operator in CHANGELIST_LOOKUPS)


class ThrottledAuthenticationForm(AuthenticationForm):
    """A login form that refuses to check passwords for an address or a user name that has failed
    too often lately (LoginFailureThrottle); each failed login counts against both. The browsable
    API's login page (/api-auth/login/) uses it as is: the same budgets as the admin's."""

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "")
        address = LoginFailureThrottle("").get_ident(self.request) if self.request else ""
        budgets = [LoginFailureThrottle(f"address:{address}"), LoginFailureThrottle(f"user:{username.lower()}")]
        for budget in budgets:
            if budget.exhausted(self.request):
                raise ValidationError(
                    "Too many failed logins; try again in %(seconds)d seconds.",
                    code="throttled",
                    params={"seconds": math.ceil(budget.wait())},
                )
        try:
            return super().clean()
        except ValidationError:
            for budget in budgets:
                budget.allow_request(self.request, None)  # counts this failure
            raise


class ThrottledLoginForm(ThrottledAuthenticationForm, AdminAuthenticationForm):
    """The admin's login form (staff only), with the same failure budgets."""


admin.site.login_form = ThrottledLoginForm


def admin_actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


def run_bulk(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Job], action: str, verb: str
) -> None:
    """Retry or cancel the selected jobs, or, with "Select all N", every job the changelist matches, through
    the bulk service (in batches, each job through its single-job service, audited once), and report how
    many it changed and why it refused the others."""
    select_across = request.POST.get("select_across") == "1"
    described: dict[str, Any] = {"admin_changelist": request.GET.urlencode()[:2000], "select_across": select_across}
    if not select_across:
        described["job_ids"] = [str(job_id) for job_id in queryset.values_list("job_id", flat=True)[:100]]
    result = services.jobs_bulk(action=action, queryset=queryset, actor=admin_actor(request), filter=described)
    if result.changed:
        modeladmin.message_user(request, f"{verb} {result.changed} job(s).", messages.SUCCESS)
    refused = result.matched - result.changed
    if refused:
        named = "; ".join(f"{job_id[:8]}: {why}" for job_id, why in result.refused)
        more = "" if refused <= len(result.refused) else f"; and {refused - len(result.refused)} more"
        modeladmin.message_user(request, f"Refused {refused}: {named}{more}", messages.WARNING)


@admin.action(description="Retry selected jobs", permissions=["retry"])
def retry_selected(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Job]) -> None:
    run_bulk(modeladmin, request, queryset, "retry", "Retried")


@admin.action(description="Cancel selected jobs", permissions=["cancel"])
def cancel_selected(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Job]) -> None:
    run_bulk(modeladmin, request, queryset, "cancel", "Cancelled")


# Everything the console shows of a job, all read-only: state changes go through the actions.
JOB_FIELDS = (
    "job_id",
    "type",
    "status_badge",
    "queue",
    "attempts",
    "max_retries",
    "timeout",
    "run_at",
    "idempotency_key",
    "unique_key",
    "unique_until",
    "tags",
    "metadata",
    "schedule",
    "workflow_link",
    "progress_shown",
    "parents_and_children",
    "submitted_by",
    "callback_url",
    "callback_status",
    "callback_attempts",
    "created_at",
    "enqueued_at",
    "started_at",
    "finished_at",
    "duration",
    "payload_pretty",
    "result_pretty",
    "error_pretty",
    "timeline",
)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["short_id", "type", "status_badge", "queue", "attempts", "created_at", "duration"]
    list_filter = ["status", "type", "queue", "created_at"]
    search_fields = ["job_id", "type", "idempotency_key"]
    actions = [retry_selected, cancel_selected]
    list_per_page = 50
    show_full_result_count = False  # no COUNT(*) over the whole table on every page
    date_hierarchy = None
    fields = JOB_FIELDS
    readonly_fields = JOB_FIELDS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are submitted through the API, where they are validated

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.retry_job")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.cancel_job")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # state changes go through the actions, i.e. through jobs.services

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the row is the durable record of the job: nothing in the console loses one

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # `schedule`: the link from a schedule to its jobs.
        # `error_fingerprint`: the link from a failure group to its jobs.
        allowed = filter_lookup_allowed(
            lookup, frozenset({"status", "type", "queue", "created_at", "schedule", "error_fingerprint"})
        )
        return allowed and super().lookup_allowed(lookup, value, request)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        # Words `tag:<tag>`, `metadata.<key>:<value>` and `payload.<field>:<value>` filter as the API's
        # ?tag=, ?metadata.<key>= and ?payload.<field>= do (all must hold); the other words search as below.
        labels, words = [], []
        for word in search_term.split():
            name, colon, value = word.partition(":")
            if colon and selectors.is_label_param(name):
                labels.append((name, value))
            else:
                words.append(word)
        if labels:
            try:
                queryset = selectors.filter_by_labels(queryset, selectors.label_filters(labels))
            except DRFValidationError as error:
                detail = error.detail if isinstance(error.detail, dict) else {"search": error.detail}
                for name, problems in detail.items():
                    self.message_user(request, f"{name}: {' '.join(map(str, problems))}", messages.ERROR)
                return queryset.none(), False
            if not words:
                return queryset, False
            search_term = " ".join(words)
        # A full job id matches exactly (indexed); anything else searches type and idempotency key.
        term = search_term.strip()
        if len(term) == 36:
            try:
                return queryset.filter(job_id=term), False
            except (ValidationError, ValueError):
                pass  # not a UUID after all
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="id", ordering="id")
    def short_id(self, job: Job) -> str:
        return str(job.job_id)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: Job) -> SafeString:
        return status_badge(job.status)

    @admin.display(description="duration")
    def duration(self, job: Job) -> str:
        seconds = job.duration_seconds
        return "—" if seconds is None else f"{seconds:.3f} s"

    @admin.display(description="workflow")
    def workflow_link(self, job: Job) -> SafeString | str:
        if not job.workflow_id:
            return "—"
        url = reverse("admin:jobs_workflow_change", args=[job.workflow_id])
        return format_html('<a href="{}">{}</a> (node {})', url, str(job.workflow_id)[:8], job.node)

    @admin.display(description="progress")
    def progress_shown(self, job: Job) -> str:
        if job.progress is None:
            return "—"
        return f"{job.progress:.0%} {job.progress_message}".strip()

    @admin.display(description="parents and children")
    def parents_and_children(self, job: Job) -> SafeString:
        def links(jobs: list[Job]) -> SafeString | str:
            return (
                format_html_join(
                    ", ",
                    '<a href="{}">{}</a> {}',
                    (
                        (
                            reverse("admin:jobs_job_change", args=[other.pk]),
                            other.node or str(other.job_id)[:8],
                            other.status,
                        )
                        for other in jobs
                    ),
                )
                or "—"
            )

        return format_html(
            "parents: {}<br>children: {}", links(selectors.job_parents(job)), links(selectors.job_children(job))
        )

    @admin.display(description="payload")
    def payload_pretty(self, job: Job) -> SafeString:
        return pretty_json(job.payload)

    @admin.display(description="result")
    def result_pretty(self, job: Job) -> SafeString:
        return pretty_json(job.result)

    @admin.display(description="error")
    def error_pretty(self, job: Job) -> SafeString:
        return format_html("<pre style='white-space:pre-wrap;margin:0'>{}</pre>", job.error or "—")

    @admin.display(description="timeline")
    def timeline(self, job: Job) -> SafeString:
        # One query for all the job's events, whatever their number.
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    event.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z",
                    event.from_status or "—",
                    event.to_status,
                    event.actor,
                    event.note,
                )
                for event in job.events.all()
            ),
        )
        return format_html(
            '<table class="sf-timeline"><thead><tr><th>when (UTC)</th><th>from</th><th>to</th><th>by</th>'
            "<th>note</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            rows,
        )

    def get_urls(self) -> list[URLPattern]:
        dashboard = self.admin_site.admin_view(self.dashboard_view)
        failures = self.admin_site.admin_view(self.failure_groups_view)
        return [
            path("dashboard/", dashboard, name="jobs_dashboard"),
            path("failures/", failures, name="jobs_failure_groups"),
            *super().get_urls(),
        ]

    def failure_groups_view(self, request: HttpRequest) -> HttpResponse:
        """Failed jobs grouped by type and error fingerprint; POST retries one group (jobs.retry_job)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            if not self.has_retry_permission(request):
                raise PermissionDenied
            job_type, fingerprint = request.POST.get("type", ""), request.POST.get("fingerprint", "")
            retried = services.failure_group_retry(
                job_type=job_type, fingerprint=fingerprint, actor=admin_actor(request)
            )
            self.message_user(
                request, f"Retried {retried} failed job(s) of {job_type} / {fingerprint}.", messages.SUCCESS
            )
            return HttpResponseRedirect(reverse("admin:jobs_failure_groups"))
        changelist = reverse("admin:jobs_job_changelist")
        groups = selectors.failure_groups(limit=FAILURE_GROUPS_SHOWN)
        for group in groups:
            query = {"status": JobStatus.FAILED, "type": group["type"], "error_fingerprint": group["fingerprint"]}
            group["jobs_url"] = f"{changelist}?{urlencode(query)}"
        context = {
            **self.admin_site.each_context(request),
            "title": "Failure groups",
            "groups": groups,
            "can_retry": self.has_retry_permission(request),
        }
        return TemplateResponse(request, "admin/jobs/failure_groups.html", context)

    def dashboard_view(self, request: HttpRequest) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Job dashboard",
            "figures": selectors.dashboard_figures(),
            "jobs_url": reverse("admin:jobs_job_changelist"),
        }
        return TemplateResponse(request, "admin/jobs/dashboard.html", context)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The one audit log, read-only: bulk retries and cancels (their filter and counts), and every pause, resume
    and change of limits of a queue or job type (target: its name)."""

    list_display = ["at", "actor", "action", "target", "detail"]
    list_filter = ["action"]
    search_fields = ["actor", "target"]
    readonly_fields = ["at", "actor", "action", "target", "detail"]
    fields = ["at", "actor", "action", "target", "detail"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an audit record is kept

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("jobs.view_job")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.view_job")


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    """A workflow: its graph (server-side SVG), every node with its status and link; cancel and retry failed."""

    list_display = ["short_id", "status_shown", "nodes", "submitted_by", "created_at", "finished_at"]
    search_fields = ["workflow_id"]
    list_per_page = 50
    show_full_result_count = False
    fields = ("workflow_id", "status_shown", "progress", "submitted_by", "created_at", "finished_at", "graph", "table")
    readonly_fields = fields
    change_form_template = "admin/jobs/workflow/change_form.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # submitted through the API, where the graph is validated

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Workflow | None:
        # Linked by its UUID (a job's workflow_id) as well as by pk.
        try:
            return Workflow.objects.get(workflow_id=object_id)
        except (Workflow.DoesNotExist, ValidationError, ValueError):
            return super().get_object(request, object_id, from_field)

    def _nodes(self, workflow: Workflow) -> list[Job]:
        cache = getattr(workflow, "_sf_nodes", None)
        if cache is None:
            cache = selectors.workflow_nodes(workflow)
            workflow._sf_nodes = cache  # type: ignore[attr-defined]  # one read per page
        return cache

    @admin.display(description="id", ordering="id")
    def short_id(self, workflow: Workflow) -> str:
        return str(workflow.workflow_id)[:8]

    @admin.display(description="nodes")
    def nodes(self, workflow: Workflow) -> int:
        return workflow.jobs.count()

    @admin.display(description="status")
    def status_shown(self, workflow: Workflow) -> SafeString:
        statuses = list(workflow.jobs.values_list("status", flat=True))
        return status_badge(selectors.workflow_status(statuses))

    @admin.display(description="progress")
    def progress(self, workflow: Workflow) -> str:
        summary = selectors.workflow_summary(workflow, self._nodes(workflow))
        counts = ", ".join(f"{count} {status}" for status, count in summary["counts"].items())
        return f"{summary['progress']:.0%} finished ({counts})"

    @admin.display(description="graph")
    def graph(self, workflow: Workflow) -> SafeString:
        jobs = self._nodes(workflow)
        parents = {job.pk: job.parent_pks for job in jobs}  # type: ignore[attr-defined]
        return render_graph(
            jobs, parents, colours=STATUS_COLOURS, link=lambda job: reverse("admin:jobs_job_change", args=[job.pk])
        )

    @admin.display(description="nodes")
    def table(self, workflow: Workflow) -> SafeString:
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:jobs_job_change", args=[job.pk]),
                    job.node,
                    job.type,
                    status_badge(job.status),
                    ", ".join(job.parent_names) or "—",  # type: ignore[attr-defined]
                    job.error_summary or "",
                )
                for job in self._nodes(workflow)
            ),
        )
        return format_html(
            '<table class="sf-workflow-nodes"><thead><tr><th>node</th><th>type</th><th>status</th><th>after</th>'
            "<th>error</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def get_urls(self) -> list[URLPattern]:
        return [
            path("<path:object_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="jobs_workflow_cancel"),
            path("<path:object_id>/retry/", self.admin_site.admin_view(self.retry_view), name="jobs_workflow_retry"),
            *super().get_urls(),
        ]

    def _act(self, request: HttpRequest, object_id: str, permission: str, act: Callable[..., int], verb: str) -> Any:
        workflow = self.get_object(request, object_id)
        if workflow is None:
            raise Http404("No such workflow.")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(permission):
            raise PermissionDenied
        count = act(workflow=workflow, actor=admin_actor(request))
        self.message_user(request, f"{verb} {count} node(s).", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:jobs_workflow_change", args=[workflow.pk]))

    def cancel_view(self, request: HttpRequest, object_id: str) -> Any:
        return self._act(request, object_id, "jobs.cancel_job", services.workflow_cancel, "Cancelled")

    def retry_view(self, request: HttpRequest, object_id: str) -> Any:
        return self._act(request, object_id, "jobs.retry_job", services.workflow_retry_failed, "Retried")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> Any:
        workflow = self.get_object(request, object_id)
        extra = {
            **(extra_context or {}),
            "can_cancel": request.user.has_perm("jobs.cancel_job"),
            "can_retry": request.user.has_perm("jobs.retry_job"),
            "workflow_pk": workflow.pk if workflow else object_id,
        }
        return super().change_view(request, str(workflow.pk) if workflow else object_id, form_url, extra)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "key_prefix", "scope", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    readonly_fields = ["key_prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_selected"]

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        allowed = filter_lookup_allowed(lookup, frozenset({"scope", "revoked_at"}))
        return allowed and super().lookup_allowed(lookup, value, request)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        return ("name", "scope") if obj is None else ("name", "scope", *self.readonly_fields)

    @admin.display(description="key")
    def key_prefix(self, key: ApiKey) -> str:
        return f"sf_{key.prefix}_…"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ModelForm[ApiKey], change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, full_key = services.api_key_create(name=obj.name, scope=obj.scope)
        obj.pk = key.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            format_html(
                "API key created. Copy it now, it will not be shown again: <code id='sf-new-key'>{}</code>. "
                "Its signing secret for completion callbacks (shown once too): <code id='sf-signing-secret'>{}</code>",
                full_key,
                key.signing_secret,
            ),
            messages.SUCCESS,
        )

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


class ScheduleForm(forms.ModelForm):
    """The schedule form: the API's checks, each error on its field; "Preview" shows the next fire times."""

    PREVIEW_BUTTON = "_preview"

    # Callables: read when a form is built, so job types registered later are offered too.
    type = forms.ChoiceField(choices=lambda: [(name, name) for name in job_type_names()])
    queue = forms.ChoiceField(
        choices=lambda: [(name, name) for name in settings.SENTINELFLOW_QUEUES], initial="default"
    )

    class Meta:
        model = Schedule
        fields = [
            "name",
            "type",
            "payload",
            "queue",
            "max_retries",
            "timeout",
            "cron",
            "timezone",
            "interval",
            "enabled",
            "misfire",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["name"].disabled = True  # jobs and metrics know a schedule by its name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        cron = (cleaned.get("cron") or "").strip()
        cleaned["cron"] = cron
        timing = services.timing_errors(
            cron=cron, timezone=cleaned.get("timezone") or "", interval=cleaned.get("interval")
        )
        for field, message in timing.items():
            self.add_error(field, message)
        job_type = get_job_type(cleaned.get("type") or "")
        if job_type is not None and "payload" in cleaned:
            payload = job_type.payload_serializer(data=cleaned["payload"])
            if not payload.is_valid():
                self.add_error("payload", json.dumps(payload.errors))
            else:
                cleaned["payload"] = payload.validated_data
        if not timing and self.PREVIEW_BUTTON in self.data:
            preview = Schedule(cron=cron, timezone=cleaned.get("timezone") or "UTC", interval=cleaned.get("interval"))
            times = ", ".join(f"{tick:%Y-%m-%d %H:%M:%S} UTC" for tick in services.upcoming_ticks(preview))
            # Shown as the form's error: a preview saves nothing.
            raise ValidationError(f"Not saved. The next five fire times would be: {times}.", code="preview")
        return cleaned


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    change_form_template = "admin/jobs/schedule/change_form.html"
    list_display = ["name", "expression", "type", "queue", "enabled", "misfire", "next_run_at", "last_run_at", "jobs"]
    list_filter = ["enabled", "type", "queue"]
    search_fields = ["name", "type"]
    readonly_fields = ["next_fire_times", "next_run_at", "last_run_at", "last_job_link", "jobs"]
    actions = ["pause_selected", "resume_selected", "run_now_selected"]

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        allowed = filter_lookup_allowed(lookup, frozenset({"enabled", "type", "queue"}))
        return allowed and super().lookup_allowed(lookup, value, request)

    def get_fields(self, request: HttpRequest, obj: Schedule | None = None) -> tuple[str, ...]:
        fields = tuple(ScheduleForm.Meta.fields)
        return fields if obj is None else (*fields, *self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Schedule, form: ModelForm[Schedule], change: bool) -> None:
        services.schedule_save(obj, changed=set(form.changed_data) if change else None)

    @admin.display(description="next five fire times (as saved)")
    def next_fire_times(self, schedule: Schedule) -> SafeString:
        ticks = services.upcoming_ticks(schedule)
        return format_html_join("", "<div>{} UTC</div>", ((f"{tick:%Y-%m-%d %H:%M:%S}",) for tick in ticks))

    @admin.display(description="last job")
    def last_job_link(self, schedule: Schedule) -> SafeString | str:
        if schedule.last_job is None:
            return "—"
        url = reverse("admin:jobs_job_change", args=[schedule.last_job.pk])
        return format_html('<a href="{}">{}</a>', url, str(schedule.last_job.job_id)[:8])

    @admin.display(description="jobs")
    def jobs(self, schedule: Schedule) -> SafeString:
        url = reverse("admin:jobs_job_changelist") + "?" + urlencode({"schedule": schedule.name})
        return format_html('<a href="{}">jobs</a>', url)

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            services.schedule_set_enabled(schedule, enabled=False)
        self.message_user(request, f"Paused {len(queryset)} schedule(s).", messages.SUCCESS)

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            services.schedule_set_enabled(schedule, enabled=True)
        self.message_user(request, f"Resumed {len(queryset)} schedule(s).", messages.SUCCESS)

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_now_selected(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            services.schedule_trigger(schedule, actor=admin_actor(request))
        self.message_user(request, f"Submitted a job for {len(queryset)} schedule(s).", messages.SUCCESS)


# --------------------------------------------------------------------------- flow control: job types and queues


class JobTypeSettingsForm(forms.ModelForm):
    """A limit applies from here only with its "overridden" box ticked (then empty means no limit); unticked,
    the job type's declared limit applies."""

    class Meta:
        model = JobTypeSettings
        fields = ["paused", "max_concurrency_overridden", "max_concurrency", "rate_overridden", "rate"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("rate") == "":
            cleaned["rate"] = None
        return cleaned


@admin.register(JobTypeSettings)
class JobTypeSettingsAdmin(admin.ModelAdmin):
    form = JobTypeSettingsForm
    list_display = ["name", "paused", "max_concurrency_in_effect", "rate_in_effect", "limit_by", "held"]
    list_filter = ["paused"]
    readonly_fields = ["name", "declared", "limit_by"]
    actions = ["pause_selected", "resume_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # every registered job type has its row (see changelist_view)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("name", "declared", "limit_by", *JobTypeSettingsForm.Meta.fields)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        services.job_types_ensure()
        return super().changelist_view(request, extra_context)

    def save_model(
        self, request: HttpRequest, obj: JobTypeSettings, form: ModelForm[JobTypeSettings], change: bool
    ) -> None:
        data, changed = form.cleaned_data, set(form.changed_data)
        changes: dict[str, Any] = {}
        reset = []
        for limit in ("max_concurrency", "rate"):
            if data[f"{limit}_overridden"]:
                if changed & {limit, f"{limit}_overridden"}:
                    changes[limit] = data[limit]
            elif f"{limit}_overridden" in changed:
                reset.append(limit)
        if "paused" in changed:
            changes["paused"] = data["paused"]
        if changes or reset:
            services.job_type_update(name=obj.name, changes=changes, reset=reset, actor=admin_actor(request))

    def _policy(self, row: JobTypeSettings) -> services.Policy:
        return services.policy(row.name, row)

    @admin.display(description="max concurrency")
    def max_concurrency_in_effect(self, row: JobTypeSettings) -> str:
        value = self._policy(row).max_concurrency
        return "—" if value is None else str(value)

    @admin.display(description="rate")
    def rate_in_effect(self, row: JobTypeSettings) -> str:
        return self._policy(row).rate or "—"

    @admin.display(description="limit by")
    def limit_by(self, row: JobTypeSettings) -> str:
        return self._policy(row).limit_by or "—"

    @admin.display(description="declared limits")
    def declared(self, row: JobTypeSettings) -> str:
        declared = services.policy(row.name, None)
        return f"max concurrency {declared.max_concurrency or '—'}, rate {declared.rate or '—'}"

    @admin.display(description="held now")
    def held(self, row: JobTypeSettings) -> int | None:
        return selectors.held_count(row.name)

    @admin.action(description="Pause selected job types", permissions=["change"])
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[JobTypeSettings]) -> None:
        self._set_paused(request, queryset, paused=True)

    @admin.action(description="Resume selected job types", permissions=["change"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[JobTypeSettings]) -> None:
        self._set_paused(request, queryset, paused=False)

    def _set_paused(self, request: HttpRequest, queryset: QuerySet[JobTypeSettings], *, paused: bool) -> None:
        done = 0
        for row in queryset:
            try:
                services.job_type_update(name=row.name, changes={"paused": paused}, actor=admin_actor(request))
                done += 1
            except services.UnknownName:
                self.message_user(request, f"{row.name}: no such job type is registered.", messages.WARNING)
        self.message_user(request, f"{'Paused' if paused else 'Resumed'} {done} job type(s).", messages.SUCCESS)


@admin.register(QueueState)
class QueueStateAdmin(admin.ModelAdmin):
    list_display = ["name", "paused", "updated_at"]
    readonly_fields = ["name", "paused", "updated_at"]
    actions = ["pause_selected", "resume_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the configured queues (SENTINELFLOW_QUEUES) have theirs

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[QueueState]:
        return super().get_queryset(request).filter(name__in=settings.SENTINELFLOW_QUEUES)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        services.job_types_ensure()
        return super().changelist_view(request, extra_context)

    @admin.action(description="Pause selected queues", permissions=["change"])
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[QueueState]) -> None:
        for queue in queryset:
            services.queue_set_paused(name=queue.name, paused=True, actor=admin_actor(request))
        self.message_user(request, f"Paused {len(queryset)} queue(s).", messages.SUCCESS)

    @admin.action(description="Resume selected queues", permissions=["change"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[QueueState]) -> None:
        for queue in queryset:
            services.queue_set_paused(name=queue.name, paused=False, actor=admin_actor(request))
        self.message_user(request, f"Resumed {len(queryset)} queue(s).", messages.SUCCESS)
