"""The documentation stays true to the code where a test can cheaply tell.

- every environment variable that settings.py reads is in docs/design.md, .env.example and the
  README's configuration table (and gunicorn.conf.py's in docs/design.md);
- every jobs_* / job_* metric family that /metrics exports is in docs/design.md;
- every relative link in the Markdown files points at a file that exists;
- nothing in the repository refers to files outside it.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
ENV_READERS = {"env_str", "env_bool", "env_number", "env_rate", "env_optional_rate", "env_list", "env_sentinels"}
# Written in pieces so that this file does not match itself.
OUTSIDE_REFERENCES = ["../" + "shared", "shared" + " folder", "DESIGN" + ".md"]
SKIPPED_DIRS = {".git", ".venv", ".venv-ci", "node_modules", "__pycache__", "test-output", "staticfiles", "var"}


def settings_variables() -> set[str]:
    """The names passed to env_str/env_bool/env_number/env_rate/env_list in settings.py."""
    tree = ast.parse((ROOT / "sentinelflow_site" / "settings.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ENV_READERS
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }


def gunicorn_variables() -> set[str]:
    """The names gunicorn.conf.py reads with os.environ.get(...)."""
    tree = ast.parse((ROOT / "sentinelflow_site" / "gunicorn.conf.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and ast.unparse(node.func.value) == "os.environ"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Targets of [text](target) and ![alt](target) that are not URLs or in-page anchors."""
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    return [target for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", target)]


def repository_files() -> list[Path]:
    """The tracked files (git ls-files), or every file outside build and cache folders without git."""
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / name for name in listed.decode().split("\0") if name]
    return [
        path
        for path in ROOT.rglob("*")
        if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)
    ]


def test_settings_reader_finds_the_variables():
    # Guards the parser itself: if it found nothing, every check below would pass vacuously.
    assert {"REDIS_URL", "DATABASE_URL", "SECRET_KEY", "QUEUES", "THROTTLE_RATE_KEY"} <= settings_variables()
    assert {"WEB_CONCURRENCY", "BIND"} <= gunicorn_variables()


def test_every_settings_variable_is_in_design_md():
    design = DESIGN.read_text()
    missing = sorted(name for name in settings_variables() if f"`{name}`" not in design)
    assert not missing, f"docs/design.md (Settings) does not name: {missing}"


def test_every_settings_variable_is_in_env_example():
    example = (ROOT / ".env.example").read_text()
    missing = sorted(name for name in settings_variables() if not re.search(rf"^{name}=", example, re.MULTILINE))
    assert not missing, f".env.example has no line for: {missing}"


def test_every_settings_variable_is_in_the_readme_configuration_table():
    table = readme_section("Configuration")
    missing = sorted(name for name in settings_variables() if f"`{name}`" not in table)
    assert not missing, f"README.md's configuration table does not name: {missing}"


def test_every_gunicorn_variable_is_in_design_md():
    design = DESIGN.read_text()
    missing = sorted(name for name in gunicorn_variables() if f"`{name}`" not in design)
    assert not missing, f"docs/design.md does not name: {missing}"


@pytest.mark.django_db
def test_every_job_metric_family_is_in_design_md(anon):
    exported = set()
    for family in text_string_to_metric_families(anon.get("/metrics").content.decode()):
        if family.name.startswith(("jobs_", "job_")):
            exported.add(f"{family.name}_total" if family.type == "counter" else family.name)
    assert {"jobs_submitted_total", "job_duration_seconds", "jobs_workers"} <= exported
    design = DESIGN.read_text()
    missing = sorted(name for name in exported if f"`{name}`" not in design)
    assert not missing, f"docs/design.md (Metrics) does not name: {missing}"


def test_relative_links_in_markdown_point_at_files_that_exist():
    broken = []
    for path in markdown_files():
        for target in relative_links(path.read_text()):
            if not (path.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_relative_link_finder_sees_links_and_skips_urls():
    text = "[a](docs/design.md) ![b](docs/x.png) [c](https://example.com) [d](#anchor) [e](../f.md#part)"
    assert relative_links(text) == ["docs/design.md", "docs/x.png", "../f.md#part"]


def test_nothing_in_the_repository_refers_to_files_outside_it():
    offenders = []
    for path in repository_files():
        try:
            text = path.read_text(errors="ignore")
        except (IsADirectoryError, FileNotFoundError):
            continue  # a submodule, or a file deleted but not yet staged
        offenders += [f"{path.relative_to(ROOT)}: {needle!r}" for needle in OUTSIDE_REFERENCES if needle in text]
    assert not offenders, offenders
