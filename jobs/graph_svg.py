"""A workflow's graph drawn as SVG on the server (the admin's workflow page: no script, no CDN).

Layered left to right: a node's column is the length of the longest path from a root to it, its row its
place in that column. Each node is a link to its job's admin page, filled with its status's colour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .models import Job

BOX_WIDTH = 150
BOX_HEIGHT = 34
COLUMN_GAP = 60
ROW_GAP = 12
MARGIN = 10
MAX_LABEL = 18


@dataclass(frozen=True)
class Placed:
    job: Job
    x: int
    y: int


def layout(jobs: list[Job], parents: dict[int, list[int]]) -> dict[int, Placed]:
    """Each job's box, by pk; `jobs` parents first (a workflow's id order), `parents` pk -> parent pks."""
    depth: dict[int, int] = {}
    for job in jobs:
        depth[job.pk] = 1 + max((depth.get(parent, 0) for parent in parents.get(job.pk, [])), default=-1)
    rows: dict[int, int] = {}
    placed = {}
    for job in jobs:
        column = depth[job.pk]
        row = rows.get(column, 0)
        rows[column] = row + 1
        x = MARGIN + column * (BOX_WIDTH + COLUMN_GAP)
        y = MARGIN + row * (BOX_HEIGHT + ROW_GAP)
        placed[job.pk] = Placed(job=job, x=x, y=y)
    return placed


def render(
    jobs: list[Job], parents: dict[int, list[int]], *, colours: dict[str, str], link: Callable[[Job], str]
) -> SafeString:
    """The SVG of the graph; every text from the database is escaped."""
    placed = layout(jobs, parents)
    if not placed:
        return mark_safe("<p>No nodes.</p>")
    width = max(box.x for box in placed.values()) + BOX_WIDTH + MARGIN
    height = max(box.y for box in placed.values()) + BOX_HEIGHT + MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sf-workflow-graph" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="workflow graph">'
    ]
    for child_pk, parent_pks in parents.items():
        child = placed.get(child_pk)
        for parent_pk in parent_pks:
            parent = placed.get(parent_pk)
            if child is None or parent is None:
                continue
            x1, y1 = parent.x + BOX_WIDTH, parent.y + BOX_HEIGHT // 2
            x2, y2 = child.x, child.y + BOX_HEIGHT // 2
            middle = (x1 + x2) // 2
            parts.append(
                f'<path d="M{x1},{y1} C{middle},{y1} {middle},{y2} {x2},{y2}" fill="none" stroke="#999"'
                ' stroke-width="1"/>'
            )
    for box in placed.values():
        job = box.job
        name = job.node or str(job.job_id)[:8]
        label = name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"
        colour = colours.get(job.status, "#444")
        parts.append(
            f'<a href="{escape(link(job))}" class="sf-node" data-node="{escape(name)}"'
            f' data-status="{escape(job.status)}">'
            f"<title>{escape(name)}: {escape(job.status)}</title>"
            f'<rect x="{box.x}" y="{box.y}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="6" fill="{escape(colour)}"/>'
            f'<text x="{box.x + 8}" y="{box.y + 14}" fill="#fff" font-size="12" font-family="sans-serif">'
            f"{escape(label)}</text>"
            f'<text x="{box.x + 8}" y="{box.y + 28}" fill="#fff" font-size="10" font-family="sans-serif">'
            f"{escape(job.status)}</text></a>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))
