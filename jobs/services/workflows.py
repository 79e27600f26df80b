"""Workflows: a graph of jobs stored in one transaction (POST /workflows), cancelled or retried as a whole.

The nodes arrive validated (jobs.api.workflows: names, `after`, no cycle, at most MAX_NODES) in an
order where every node comes after its parents; they are stored in that order, so the ids of a
workflow's jobs are a topological order too. A node without parents is queued (or scheduled) like any
submit; the others wait (jobs.services.dependencies releases them).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from .. import metrics
from ..exceptions import InvalidTransition
from ..models import TERMINAL_STATUSES, Job, JobDependency, Workflow
from . import transitions
from .enqueue import push_many
from .lifecycle import job_cancel, job_retry
from .submission import insert_jobs, new_job
from .transitions import S

logger = logging.getLogger(__name__)

MAX_NODES = 1000


def workflow_submit(*, nodes: list[dict[str, Any]], submitted_by: str) -> tuple[Workflow, list[Job]]:
    """Store a workflow and its jobs (one per node, in the order given: parents first) with their edges,
    all or nothing; push the nodes without parents after the commit. Each node is a validated submit plus
    `name`, `after` (names) and `run_if` ("succeeded" or "finished")."""
    submitted_at = transitions.now()
    with transaction.atomic():
        workflow = Workflow.objects.create(submitted_by=submitted_by, created_at=submitted_at)
        jobs = []
        for node in nodes:
            job = new_job(
                {**node, "allow_failure": node.get("run_if") == "finished"},
                submitted_at=submitted_at,
                submitted_by=submitted_by,
                idempotency_key=None,
                fingerprint="",
            )
            job.workflow_id = workflow.workflow_id
            job.node = node["name"]
            if node.get("after"):
                job.status, job.enqueued_at = S.WAITING, None
            jobs.append(job)
        insert_jobs(jobs, at=submitted_at, actor=submitted_by)
        by_name = {job.node: job for job in jobs}
        JobDependency.objects.bulk_create(
            JobDependency(child_id=by_name[node["name"]].pk, parent_id=by_name[parent].pk)
            for node in nodes
            for parent in dict.fromkeys(node.get("after") or [])
        )
        roots = [job for job in jobs if job.status != S.WAITING]
        counts = [("jobs_submitted_total", (job.type,)) for job in roots]
        # As every submit: the rows are committed before a worker can take the jobs.
        transaction.on_commit(lambda: push_many(roots, counts=counts))
    with metrics.record() as batch:
        batch.inc("workflows_started_total")
        for job in jobs:
            if job.status == S.WAITING:
                batch.inc("jobs_submitted_total", job.type)
    logger.info("workflow %s submitted by %s: %d nodes", workflow.workflow_id, submitted_by, len(jobs))
    return workflow, jobs


def workflow_cancel(*, workflow: Workflow, actor: str) -> int:
    """Cancel every node of the workflow that has not finished, parents first; the count cancelled."""
    unfinished = list(Job.objects.filter(workflow=workflow).exclude(status__in=TERMINAL_STATUSES).order_by("id"))
    for job in unfinished:
        try:
            job_cancel(job=job, actor=actor)
        except InvalidTransition:
            continue  # finished, or cancelled with a parent (the release's cascade), meanwhile
    cancelled = Job.objects.filter(pk__in=[job.pk for job in unfinished], status=S.CANCELLED).count()
    logger.info("workflow %s cancelled by %s: %d nodes", workflow.workflow_id, actor, cancelled)
    return cancelled


def workflow_retry_failed(*, workflow: Workflow, actor: str) -> int:
    """Retry the failed and cancelled nodes, parents first: a retried parent runs again, and the nodes it
    cancelled wait for it again. The count retried."""
    retried = 0
    # Open again first: the retried nodes' finish counts the workflow's finish again.
    Workflow.objects.filter(pk=workflow.pk).update(finished_at=None, outcome="")
    for job in Job.objects.filter(workflow=workflow, status__in=[S.FAILED, S.CANCELLED]).order_by("id"):
        job.refresh_from_db()
        try:
            job_retry(job=job, actor=actor)
            retried += 1
        except InvalidTransition:
            continue
    return retried
