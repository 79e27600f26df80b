"""Scenario 7 of bench/run.py, memory: what it measures is in the docstring below and bench/README.md."""

from __future__ import annotations

import psutil

from bench.common import vm_hwm_mb
from bench.report import Row, verdict
from bench.stack import Stack


def web_memory(stack: Stack) -> dict:
    if stack.web is None:
        return {}
    try:
        children = psutil.Process(stack.web.pid).children()
    except psutil.Error:
        return {}
    per_worker = {child.pid: vm_hwm_mb(child.pid) for child in children}
    return {"master_vmhwm_mb": vm_hwm_mb(stack.web.pid), "workers_vmhwm_mb": per_worker}


def scenario_7_memory(stack: Stack, data: dict) -> list[Row]:
    """Peak RSS of a gunicorn web worker and of an rqworker (with its work horses), from scenario 1."""
    sampled = data.get("memory_worker_sampler", {})
    web = data.get("memory_web_after_1", {})
    worker_mb = sampled.get("peak_tree_mb")
    web_mb = max(filter(None, (web.get("workers_vmhwm_mb") or {}).values()), default=None)
    io = data.get("memory_io_worker_sampler")
    data["7"] = {"worker": sampled, "web_after_1": web, "web_end": web_memory(stack), "io_worker": io}
    rows = [
        Row(
            "7 memory",
            "rqworker peak (RSS + horse USS)",
            worker_mb,
            None,
            "MB",
            None,
            "<= 120 MB",
            verdict(worker_mb <= 120) if worker_mb else "BLOCKED",
            f"main RSS peak {sampled.get('peak_main_rss_mb', 0):.0f} MB, horse RSS peak "
            f"{sampled.get('peak_child_rss_mb', 0):.0f} MB / USS {sampled.get('peak_child_uss_mb', 0):.0f} MB"
            if sampled
            else "needs scenario 1",
        ),
        Row(
            "7 memory",
            "gunicorn web worker VmHWM",
            web_mb,
            None,
            "MB",
            None,
            "<= 150 MB",
            verdict(web_mb <= 150) if web_mb else "BLOCKED",
            f"master {web.get('master_vmhwm_mb') or 0:.0f} MB" if web else "needs scenario 1",
        ),
    ]
    if io and io.get("peak_tree_mb"):
        rows.append(
            Row(
                "7 memory",
                "rqworker peak in scenario 5",
                io["peak_tree_mb"],
                None,
                "MB",
                note=f"{' '.join(io['worker_args']) or 'default worker'}; for information",
            )
        )
    return rows
