"""The README's "Walk-through with curl", parsed from the README and run as written against a live stack.

Each command runs in bash, as a reader would paste it, with only the address, the API key and the
`<job_id>` placeholders replaced (by the stack's, and by the job id of the latest `POST /jobs` answer).
Every step must match one of the expectations below, so a step added to the README needs one here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from .harness import API_KEY, REPO_ROOT, Api, Stack, Workers, wait_until

pytestmark = pytest.mark.integration

README_BASE_URL = "http://127.0.0.1:8000"
README_KEY = "dev-key"
STATUS_MARK = "HTTP_STATUS "


@dataclass
class Step:
    comment: str
    command: str

    def request(self) -> tuple[str, str]:
        """(method, path) of the step's curl command, with job ids replaced by `{id}`."""
        words = shlex.split(self.command.split("|", 1)[0])
        method = words[words.index("-X") + 1] if "-X" in words else "GET"
        url = next(word for word in words if word.startswith("http"))
        path = re.sub(r"/jobs/[^/?]+", "/jobs/{id}", urlsplit(url).path)
        return method, path


def readme_steps() -> list[Step]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("\n## Walk-through with curl\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "the walk-through should be one sh block"
    steps, comment, lines = [], [], iter(blocks[0].splitlines())
    for line in lines:
        if not line.strip():
            continue
        if line.startswith("#"):
            comment.append(line.lstrip("# "))
            continue
        command = line
        while command.endswith("\\"):
            command = command[:-1] + next(lines)
        steps.append(Step(" ".join(comment), command))
        comment = []
    return steps


def run(command: str) -> tuple[int, str]:
    """Run a README command in bash; its HTTP status (from curl's -w) and its output without that line."""
    marked = command.replace("curl ", f"curl -w '\\n{STATUS_MARK}%{{http_code}}\\n' ", 1)
    result = subprocess.run(["bash", "-c", marked], capture_output=True, text=True, timeout=30)
    output = result.stdout
    codes = re.findall(rf"^{STATUS_MARK}(\d+)$", output, re.MULTILINE)
    output = re.sub(rf"\n?^{STATUS_MARK}\d+$\n?", "", output, flags=re.MULTILINE)
    return (int(codes[-1]) if codes else 0), output


def body(output: str) -> dict:
    """The JSON body of a curl answer, with or without the headers of `-i`."""
    return json.loads(output.split("\n\n", 1)[1] if output.startswith("HTTP/") else output)  # text mode: \r\n is \n


@pytest.fixture
def curl() -> None:
    if shutil.which("curl") is None:
        if os.environ.get("CI"):
            pytest.fail("curl is needed for the README walk-through test")
        pytest.skip("curl is not installed")


def test_readme_walkthrough_runs_as_written(curl, stack: Stack, workers: Workers, api: Api):
    workers.start(scheduler=True, EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend")
    steps = readme_steps()
    assert len(steps) >= 10, steps
    job_id = None
    seen: list[tuple[str, str]] = []

    for step in steps:
        request = step.request()
        seen.append(request)
        command = step.command.replace(README_BASE_URL, stack.base_url).replace(README_KEY, API_KEY)
        if "<job_id>" in command:
            assert job_id, f"{step.command}: no job submitted before it"
            command = command.replace("<job_id>", job_id)
        if request == ("POST", "/jobs/{id}/retry"):
            # "a few seconds later": once its one retry has failed too.
            api.wait_for_status(job_id, "failed", timeout=60)
        if request == ("GET", "/jobs") and "status=succeeded" in command:
            # The reader looked at the job's status until it said succeeded.
            api.wait_for_status(job_id, "succeeded", timeout=30)
        status, output = run(command)

        if request == ("POST", "/jobs"):
            answer = body(output)
            if "Idempotency-Key" in command:
                assert status == 201, (step, output)
                again, repeated = run(command)  # the same key again: the same job, 200
                assert (again, body(repeated)["job_id"]) == (200, answer["job_id"]), repeated
            else:
                assert status == 201, (step, output)
            if output.startswith("HTTP/"):
                assert re.search(rf"^Location: .*/jobs/{answer['job_id']}\r?$", output, re.MULTILINE | re.I), output
            assert answer["status"] in {"queued", "pending"}, answer
            job_id = answer["job_id"]
            api.submitted.append(job_id)
        elif request == ("GET", "/jobs/{id}"):
            assert status == 200, (step, output)
            assert body(output)["job_id"] == job_id
            assert body(output)["status"] in {"queued", "started", "succeeded"}
        elif request == ("GET", "/jobs"):
            assert status == 200, (step, output)
            listed = body(output)
            assert set(listed) >= {"next", "previous", "results"}
            assert job_id in [job["job_id"] for job in listed["results"]]
            assert {(job["status"], job["type"]) for job in listed["results"]} == {("succeeded", "email")}
        elif request == ("POST", "/jobs/{id}/retry"):
            assert status == 202, (step, output)
            assert body(output)["status"] == "queued" and body(output)["attempts"] == 2
        elif request == ("POST", "/jobs/{id}/cancel"):
            assert status == 202, (step, output)
            assert body(output)["status"] == "cancelled"
        elif request == ("GET", "/metrics"):
            lines = output.splitlines()
            assert lines and all(line.startswith("jobs_") for line in lines), output
            assert any(line.startswith('jobs_submitted_total{type="email"} ') for line in lines), output
        elif request == ("GET", "/healthz"):
            assert (status, body(output)) == (200, {"status": "ok"}), output
        elif request == ("GET", "/readyz"):
            assert status == 200 and body(output)["status"] == "ok", output
        else:
            pytest.fail(f"the README walk-through has a step this test does not check: {step.command}")

    assert {"POST /jobs/{id}/retry", "POST /jobs/{id}/cancel", "GET /metrics"} <= {" ".join(r) for r in seen}
    # The email of the first step was sent (the console backend prints it in the worker's output).
    assert "Subject: Hello" in workers.processes[0].output()
    wait_until(
        lambda: api.job(job_id)["status"] == "succeeded",  # the idempotent echo job
        timeout=30,
        message=lambda: str(api.job(job_id)),
    )
