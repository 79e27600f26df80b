"""The workflows endpoints: POST /workflows, GET /workflows/{id} (?wait=), /workflows/{id}/cancel and /retry.

A workflow is validated as a whole before anything is stored: every node a valid submit, names unique,
`after` naming other nodes, no cycle, at most MAX_NODES nodes; each error is keyed by the node's name.
"""

from __future__ import annotations

import re
from typing import Any

from django.urls import reverse
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from .. import selectors, services
from ..models import Job, Workflow
from ..services.workflows import MAX_NODES
from . import schema
from .permissions import scopes_of
from .serializers import SUBMIT_FIELDS, JobSerializer, JobSubmitSerializer
from .views import actor_of, wait_seconds

NODE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
NODE_FIELDS = (SUBMIT_FIELDS - {"depends_on", "allow_failure"}) | {"name", "after", "run_if"}
RUN_IF = ("succeeded", "finished")
# Edges are rows too: a thousand nodes each after every other would be half a million of them.
MAX_EDGES = 20_000


def node_key(node: Any, index: int) -> str:
    """How an error names a node: its name when it has a usable one, else its position."""
    name = node.get("name") if isinstance(node, dict) else None
    return name if isinstance(name, str) and NODE_NAME.fullmatch(name) else f"#{index}"


def topological(nodes: list[dict[str, Any]]) -> list[dict[str, Any]] | list[str]:
    """The nodes, parents first; or, when they form a cycle, the names of the nodes on one (in order)."""
    by_name = {node["name"]: node for node in nodes}
    pending = {node["name"]: len(set(node["after"])) for node in nodes}
    children: dict[str, list[str]] = {name: [] for name in by_name}
    for node in nodes:
        for parent in dict.fromkeys(node["after"]):
            children[parent].append(node["name"])
    ready = [name for name, count in pending.items() if count == 0]
    ordered = []
    while ready:
        name = ready.pop()
        ordered.append(by_name[name])
        for child in children[name]:
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
    if len(ordered) == len(nodes):
        return ordered
    # Walk back along unfinished parents from any node left: it reaches a cycle.
    left = {name for name, count in pending.items() if count > 0}
    path: list[str] = []
    name = next(iter(sorted(left)))
    while name not in path:
        path.append(name)
        name = next(parent for parent in by_name[name]["after"] if parent in left)
    return [*path[path.index(name) :], name]


class WorkflowSubmitSerializer(serializers.Serializer):
    """The body of POST /workflows: {"nodes": [{"name", <submit fields>, "after", "run_if"}, ...]}."""

    nodes = serializers.ListField(child=serializers.JSONField(), min_length=1, max_length=MAX_NODES)

    def validate_nodes(self, items: list[Any]) -> list[dict[str, Any]]:
        errors: dict[str, Any] = {}
        validated: list[dict[str, Any]] = []
        names = [item.get("name") if isinstance(item, dict) else None for item in items]
        known = {name for name in names if isinstance(name, str)}
        seen: set[str] = set()
        for index, item in enumerate(items):
            key = node_key(item, index)
            if not isinstance(item, dict):
                errors[key] = {"non_field_errors": ["Expected a JSON object."]}
                continue
            problems: dict[str, list[str]] = {}
            unknown = sorted(set(item) - NODE_FIELDS)
            for field in unknown:
                problems[field] = ["Unknown field." if field != "depends_on" else "Use after, with node names."]
            name = item.get("name")
            if not isinstance(name, str) or not NODE_NAME.fullmatch(name):
                problems["name"] = ["Use 1 to 64 letters, digits, dots, hyphens and underscores."]
            elif name in seen:
                problems["name"] = [f"Another node is named {name!r}."]
            else:
                seen.add(name)
            after = item.get("after", [])
            if not isinstance(after, list) or not all(isinstance(parent, str) for parent in after):
                problems["after"] = ["Expected a list of node names."]
            else:
                missing = [parent for parent in after if parent not in known]
                if missing:
                    problems["after"] = [f"Unknown node {parent!r}." for parent in missing]
            run_if = item.get("run_if", "succeeded")
            if run_if not in RUN_IF:
                problems["run_if"] = [f"Use one of: {', '.join(RUN_IF)}."]
            submit = JobSubmitSerializer(
                data={field: value for field, value in item.items() if field in SUBMIT_FIELDS}, context=self.context
            )
            if not submit.is_valid():
                problems.update(submit.errors)
            if problems:
                errors[key] = problems
                continue
            validated.append({**submit.validated_data, "name": name, "after": list(after), "run_if": run_if})
        if errors:
            raise serializers.ValidationError(errors)
        edges = sum(len(set(node["after"])) for node in validated)
        if edges > MAX_EDGES:
            raise serializers.ValidationError(f"At most {MAX_EDGES} edges ('after' entries) in all; this has {edges}.")
        ordered = topological(validated)
        if ordered and isinstance(ordered[0], str):
            cycle = " -> ".join(str(name) for name in ordered)
            raise serializers.ValidationError({str(ordered[0]): {"after": [f"The nodes form a cycle: {cycle}."]}})
        return ordered  # type: ignore[return-value]  # the nodes: no cycle


def workflow_body(workflow: Workflow, jobs: list[Job], *, context: dict[str, Any]) -> dict[str, Any]:
    """A workflow as the API shows it: status, counts, progress, and every node's job by name."""
    rendered = JobSerializer(jobs, many=True, context=context).data
    by_name = {}
    for job, body in zip(jobs, rendered, strict=True):
        by_name[job.node] = {
            **body,
            "after": getattr(job, "parent_names", []),
            "run_if": "finished" if job.allow_failure else "succeeded",
        }
    return {
        "workflow_id": str(workflow.workflow_id),
        **selectors.workflow_summary(workflow, jobs),
        "created_at": serializers.DateTimeField().to_representation(workflow.created_at),
        "jobs": by_name,
    }


class WorkflowViewSet(viewsets.GenericViewSet[Workflow]):
    """Submit, inspect, cancel and retry workflows."""

    lookup_field = "workflow_id"
    lookup_value_regex = "[^/]+"
    serializer_class = WorkflowSubmitSerializer

    def get_queryset(self) -> Any:
        return Workflow.objects.all()

    def get_object(self) -> Workflow:
        return selectors.workflow_get(workflow_id=self.kwargs["workflow_id"])

    def _context(self) -> dict[str, Any]:
        return {**self.get_serializer_context(), "redact": "read" not in scopes_of(self.request)}

    def _respond(self, workflow: Workflow, code: int, jobs: list[Job] | None = None) -> Response:
        jobs = selectors.workflow_nodes(workflow) if jobs is None else jobs
        return Response(workflow_body(workflow, jobs, context=self._context()), status=code)

    @schema.workflow_create
    def create(self, request: Request) -> Response:
        submit = WorkflowSubmitSerializer(data=request.data, context={"now": services.now})
        submit.is_valid(raise_exception=True)
        workflow, _jobs = services.workflow_submit(nodes=submit.validated_data["nodes"], submitted_by=actor_of(request))
        response = self._respond(workflow, status.HTTP_201_CREATED)
        location = reverse("workflow-detail", kwargs={"workflow_id": workflow.workflow_id})
        response["Location"] = request.build_absolute_uri(location)
        return response

    @schema.workflow_retrieve
    def retrieve(self, request: Request, workflow_id: str | None = None) -> Response:
        seconds = wait_seconds(request)
        if seconds:
            workflow, jobs = selectors.workflow_wait(workflow_id=self.kwargs["workflow_id"], seconds=seconds)
            return self._respond(workflow, status.HTTP_200_OK, jobs)
        return self._respond(self.get_object(), status.HTTP_200_OK)

    @schema.workflow_action("Cancel every node that has not finished")
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, workflow_id: str | None = None) -> Response:
        workflow = self.get_object()
        services.workflow_cancel(workflow=workflow, actor=actor_of(request))
        return self._respond(workflow, status.HTTP_202_ACCEPTED)

    @schema.workflow_action("Retry the failed and cancelled nodes, parents first")
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, workflow_id: str | None = None) -> Response:
        workflow = self.get_object()
        services.workflow_retry_failed(workflow=workflow, actor=actor_of(request))
        return self._respond(workflow, status.HTTP_202_ACCEPTED)
