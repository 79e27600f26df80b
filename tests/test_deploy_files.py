"""The Grafana dashboard and the alert rules only use metric names that /metrics really exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobs import services

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "max", "min", "le", "and", "on", "or"}
PROMQL_WORDS |= {"clamp_min", "type", "queue", "reason", "without", "avg", "count", "schedule", "status"}


def exported_names(anon) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(anon.get("/metrics").content.decode()):
        names |= {sample.name for sample in family.samples}
    return names


def metric_names_in(expression: str) -> set[str]:
    expression = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expression)
    return {word for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expression) if word not in PROMQL_WORDS}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "sentinelflow.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


@pytest.mark.django_db
def test_dashboard_queries_use_only_exported_metrics(anon, django_capture_on_commit_callbacks):
    # The schedule families have a series for each schedule (at zero until it fires).
    with django_capture_on_commit_callbacks(execute=True):
        services.schedule_create(name="nightly", type="echo", payload={}, cron="0 3 * * *")
    exported = exported_names(anon)
    used = set().union(*(metric_names_in(e) for e in dashboard_expressions()))

    assert used, "the dashboard has no queries"
    assert used <= exported, used - exported
    # Every panel the issue asks for: throughput, failures, duration and wait quantiles, queue depth, workers.
    assert {"jobs_succeeded_total", "jobs_failed_total", "job_duration_seconds_bucket"} <= used
    assert {"job_wait_seconds_bucket", "jobs_queue_depth", "jobs_workers"} <= used
    assert {"schedule_runs_total", "schedule_lag_seconds_bucket", "schedule_lag_seconds_count"} <= used
    assert "jobs_pruned_total" in used


@pytest.mark.django_db
def test_alert_rules_use_only_exported_metrics(anon):
    exported = exported_names(anon)
    used = set().union(*(metric_names_in(e) for e in alert_expressions()))

    assert used <= exported, used - exported
    assert len(alert_expressions()) == 4


def test_promtool_accepts_and_unit_tests_the_rules():
    if shutil.which("promtool") is None:
        reason = "promtool is needed: apt-get install prometheus (Debian's package ships it)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # .ci/run installs it
        pytest.skip(reason)
    check = subprocess.run(["promtool", "check", "rules", "alerts.yml"], cwd=DEPLOY / "prometheus", capture_output=True)
    test = subprocess.run(
        ["promtool", "test", "rules", "alerts_test.yml"], cwd=DEPLOY / "prometheus", capture_output=True
    )

    assert check.returncode == 0, check.stdout + check.stderr
    assert test.returncode == 0, test.stdout + test.stderr
