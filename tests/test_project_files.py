"""The project's files agree with each other: packaging with the requirements, settings with their docs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-r")]


def test_pyproject_dependencies_are_the_pins_of_requirements_txt():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())

    assert sorted(pyproject["project"]["dependencies"]) == sorted(requirement_lines(ROOT / "requirements.txt"))
    assert all("==" in line for line in requirement_lines(ROOT / "requirements-dev.txt"))
    assert pyproject["build-system"]["build-backend"] == "setuptools.build_meta"


def test_the_bench_peers_are_pinned_on_the_projects_django():
    """bench/requirements.txt (the durable peers' venv) pins every package, with the project's Django."""
    bench = requirement_lines(ROOT / "bench" / "requirements.txt")
    project = requirement_lines(ROOT / "requirements.txt")

    assert bench and all(re.fullmatch(r"[A-Za-z0-9_.\[\],-]+==[A-Za-z0-9_.+-]+", line) for line in bench), bench
    assert [line for line in bench if line.startswith("Django==")] == [
        line for line in project if line.startswith("Django==")
    ]
    names = {line.split("==")[0].lower().replace("_", "-") for line in bench}
    assert {"django-tasks", "django-tasks-db", "procrastinate", "django-q2", "celery", "django-celery-results"} <= names


def pins(path: Path) -> dict[str, str]:
    return {line.split("==")[0].lower(): line.split("==")[1] for line in requirement_lines(path)}


def test_the_django6_requirements_are_the_projects_pins_with_django_6():
    """requirements-django6.txt (.ci/run's Django 6 venv): every runtime pin but Django and the django-tasks
    backport (Django 6 has django.tasks), and test tools pinned as in requirements-dev.txt."""
    django6 = pins(ROOT / "requirements-django6.txt")
    runtime = pins(ROOT / "requirements.txt")
    dev = pins(ROOT / "requirements-dev.txt")

    assert django6.pop("django").startswith("6.")
    assert runtime.pop("django").startswith("5.2.") and runtime.pop("django-tasks")
    assert {name: version for name, version in django6.items() if name in runtime} == runtime
    assert {name: version for name, version in django6.items() if name not in runtime} == {
        name: dev[name] for name in django6 if name not in runtime
    }


def settings_variables() -> set[str]:
    source = (ROOT / "sentinelflow_site" / "settings.py").read_text()
    return set(re.findall(r"env_(?:str|bool|number|rate|optional_rate|list)\(\s*\"([A-Z_]+)\"", source))


def test_every_variable_settings_read_is_in_env_example_and_the_readme_table():
    variables = settings_variables()
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]

    assert {"DEBUG", "SECRET_KEY", "REDIS_URL", "ENV_FILE", "SENTINELFLOW_HANDLER_MODULES"} <= variables
    assert variables - example == set()
    assert {name for name in variables if f"`{name}`" not in table} == set()
