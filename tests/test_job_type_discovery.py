"""Job types are found without editing the project: an installed app's `job_types` module, or the modules
named in SENTINELFLOW_HANDLER_MODULES. The README's own example is the module under test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a `manage.py shell` of its own, so that the extra types never reach this process's registry.
SCRIPT = """
import json
from rest_framework.test import APIClient
from jobs import redis_store
from jobs.handlers import job_type_names
from jobs.models import Job
from jobs.worker import Worker

client = APIClient()
client.credentials(HTTP_X_API_KEY="dev-key")
answers = {
    name: client.post("/jobs", body, format="json")
    for name, body in {
        "resize": {"type": "resize", "payload": {"image_url": "https://example.com/cat.png"}},
        "resize_bad": {"type": "resize", "payload": {"image_url": "not a url"}},
        "shout": {"type": "shout", "payload": {"text": "hello"}},
    }.items()
}
Worker(redis_store.queues(), connection=redis_store.connection()).work(burst=True, logging_level="WARNING")
created = {name: answer.json()["job_id"] for name, answer in answers.items() if answer.status_code == 201}
jobs = {name: Job.objects.get(job_id=job_id) for name, job_id in created.items()}
print("RESULT " + json.dumps({
    "types": job_type_names(),
    "status_codes": {name: answer.status_code for name, answer in answers.items()},
    "resize_bad": answers["resize_bad"].json(),
    "jobs": {name: [job.status, job.result] for name, job in jobs.items()},
}))
"""


def readme_job_type_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Job types\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "the Job types section should have exactly one Python example"
    return blocks[0]


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_readme_example_module_named_in_the_environment_and_an_app_job_types_module_both_run(tmp_path):
    (tmp_path / "resize_jobs.py").write_text(readme_job_type_example())
    env = {
        **os.environ,
        "TESTING": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "PYTHONPATH": str(tmp_path),
        "SENTINELFLOW_HANDLER_MODULES": "resize_jobs",
        "DJANGO_SETTINGS_MODULE": "tests.example_app.settings",  # installs tests.example_app
    }
    migrate = manage("migrate", "--noinput", "-v", "0", env=env)
    assert migrate.returncode == 0, migrate.stderr

    shell = manage("shell", "-c", SCRIPT, env=env)

    assert shell.returncode == 0, shell.stderr
    result = json.loads(shell.stdout.split("RESULT ", 1)[1])
    assert {"resize", "shout", "echo"} <= set(result["types"])
    assert result["status_codes"] == {"resize": 201, "resize_bad": 400, "shout": 201}
    assert "image_url" in json.dumps(result["resize_bad"])
    assert result["jobs"] == {"resize": ["succeeded", {"ok": True}], "shout": ["succeeded", {"text": "HELLO"}]}


def test_without_the_app_or_the_variable_the_extra_types_are_unknown(tmp_path):
    env = {
        **os.environ,
        "TESTING": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "sentinelflow_site.settings",
    }
    env.pop("SENTINELFLOW_HANDLER_MODULES", None)
    shell = manage("shell", "-c", "from jobs.handlers import job_type_names; print(job_type_names())", env=env)

    assert shell.returncode == 0, shell.stderr
    assert "resize" not in shell.stdout and "shout" not in shell.stdout
    assert "echo" in shell.stdout


def test_a_module_that_cannot_be_imported_stops_the_start_naming_the_variable(tmp_path):
    env = {**os.environ, "TESTING": "1", "SENTINELFLOW_HANDLER_MODULES": "no_such_module_here"}
    env["DJANGO_SETTINGS_MODULE"] = "sentinelflow_site.settings"
    result = manage("check", env=env)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SENTINELFLOW_HANDLER_MODULES" in lines[0] and "no_such_module_here" in lines[0]
