"""deploy/kubernetes and deploy/systemd are checked, not just shipped.

- every Kubernetes manifest validates against the Kubernetes schemas (kubernetes-validate, strict: unknown
  fields fail), the two custom resources against their JSON schemas in deploy/kubernetes/schemas/;
- they hold together: the names the issue gives, the KEDA query on the metric /metrics exports, the
  ServiceMonitor on the web Service's port, settings that settings.py reads;
- every systemd unit passes `systemd-analyze verify` (only the install path's absence is tolerated).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.test_docs import settings_variables

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
SYSTEMD = ROOT / "deploy" / "systemd"
KUBERNETES_VERSION = "1.37.0"
SCHEMAS = KUBERNETES / "schemas"
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "keda.sh_v1alpha1_scaledobject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "monitoring.coreos.com_v1_servicemonitor.json",
}
INSTALL_PREFIX = "/opt/sentinelflow/"


def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        found += [(path.name, document) for document in yaml.safe_load_all(path.read_text()) if document]
    return found


def by_kind(kind: str) -> list[dict]:
    return [document for _, document in manifests() if document["kind"] == kind]


def validate(document: dict) -> None:
    """Raise on a document that its schema refuses (kubernetes-validate's, or the custom resource's own)."""
    schema_path = CUSTOM_SCHEMAS.get((document["apiVersion"], document["kind"]))
    if schema_path is not None:
        jsonschema.validate(document, json.loads(schema_path.read_text()))
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_every_kubernetes_manifest_validates_against_its_schema():
    documents = manifests()
    assert len(documents) >= 12
    for name, document in documents:
        try:
            validate(document)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            pytest.fail(f"{name}: {document['kind']} {document['metadata']['name']}: {error}")


@pytest.mark.parametrize("kind", ["Deployment", "ScaledObject", "ServiceMonitor"])
def test_a_misspelt_field_is_refused(kind):
    """The checks above would catch a typo: strict validation refuses an unknown field in each kind of schema."""
    document = json.loads(json.dumps(by_kind(kind)[0]))
    document["spec"]["replica"] = 2

    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(document)


def test_the_deployments_jobs_and_budgets_the_operations_guide_names():
    deployments = {d["metadata"]["name"] for d in by_kind("Deployment")}
    assert deployments == {"sentinelflow-web", "sentinelflow-worker", "sentinelflow-sentinel"}
    assert {j["metadata"]["name"] for j in by_kind("Job")} == {"sentinelflow-migrate"}
    budgets = {b["metadata"]["name"]: b["spec"]["selector"]["matchLabels"] for b in by_kind("PodDisruptionBudget")}
    templates = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in by_kind("Deployment")}
    assert budgets.keys() == templates.keys()
    for name, selector in budgets.items():
        assert selector.items() <= templates[name].items(), f"the budget {name} selects no pod of its Deployment"


def test_every_variable_in_the_config_map_and_secret_is_a_setting():
    known = settings_variables() | {"WEB_CONCURRENCY", "WEB_THREADS", "BIND", "PROMETHEUS_MULTIPROC_DIR"}
    for document in [*by_kind("ConfigMap"), *by_kind("Secret")]:
        names = set(document.get("data", {})) | set(document.get("stringData", {}))
        assert names <= known, names - known


@pytest.mark.django_db
def test_keda_scales_the_workers_on_the_exported_queue_depth(anon):
    (scaled,) = by_kind("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "sentinelflow-worker"
    (trigger,) = scaled["spec"]["triggers"]
    exported = {family.name for family in text_string_to_metric_families(anon.get("/metrics").content.decode())}
    assert "jobs_queue_depth" in exported
    assert re.search(r"\bjobs_queue_depth\b", trigger["metadata"]["query"])


def test_the_service_monitor_scrapes_the_web_services_metrics_port():
    (monitor,) = by_kind("ServiceMonitor")
    (service,) = [s for s in by_kind("Service") if s["metadata"]["name"] == "sentinelflow-web"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {port["name"] for port in service["spec"]["ports"]}
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
    assert "http" in ports


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (Debian's systemd package; .ci/run installs it)")
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    return found


def verify_unit(unit: Path, tmp_path: Path) -> list[str]:
    """What `systemd-analyze verify` says about `unit`, less the absent install path's executables."""
    if unit.name.endswith("@.service"):
        instance = tmp_path / unit.name.replace("@.service", "@1.service")
        shutil.copy(unit, instance)  # a template is verified through an instance of it
        unit = instance
    result = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    absent = re.compile(rf"Command {re.escape(INSTALL_PREFIX)}\S+ is not executable: No such file or directory")
    return [line for line in lines if not absent.search(line)]


@pytest.mark.parametrize("unit", sorted(SYSTEMD.glob("*.service")), ids=lambda path: path.name)
def test_systemd_units_pass_systemd_analyze_verify(unit, tmp_path):
    assert verify_unit(unit, tmp_path) == []


def test_systemd_verify_would_catch_a_broken_unit(tmp_path):
    broken = tmp_path / "sentinelflow-broken.service"
    text = (SYSTEMD / "sentinelflow-sentinel.service").read_text()
    broken.write_text(text.replace("Restart=always", "Restart=alwayz\nRestartSecs=2"))

    complaints = "\n".join(verify_unit(broken, tmp_path))

    assert "alwayz" in complaints
    assert "RestartSecs" in complaints


def test_the_systemd_units_run_what_scripts_run_sh_runs():
    units = {path.name: path.read_text() for path in SYSTEMD.glob("*.service")}
    assert set(units) == {
        "sentinelflow-web.service",
        "sentinelflow-worker@.service",
        "sentinelflow-sentinel.service",
        "sentinelflow-migrate.service",
    }
    assert (
        "gunicorn -c sentinelflow_site/gunicorn.conf.py sentinelflow_site.wsgi:application"
        in units["sentinelflow-web.service"]
    )
    assert "manage.py rqworker high default low --with-scheduler" in units["sentinelflow-worker@.service"]
    assert "manage.py sentinel" in units["sentinelflow-sentinel.service"]
    assert "manage.py migrate --noinput" in units["sentinelflow-migrate.service"]
