"""The multi-host suite: builds its hosts as network namespaces (tests/multihost/hosts.py) once per session.

It needs root and iproute2; without them it is skipped with the reason, except in CI (CI=true), where it
fails instead: CI must run the drills. Each drill's line (`drill NAME: A accepted, ...`) is printed at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster, build_cluster, postgres_bin
from .hosts import namespaces_available

DRILL_LINES: list[str] = []


def unavailable() -> str | None:
    reason = namespaces_available()
    if reason is None:
        try:
            postgres_bin()
        except RuntimeError as error:
            reason = str(error)
    return reason


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the multi-host drills must run in CI, but: {reason}", pytrace=False)
        pytest.skip(f"multi-host drills: {reason}")
    log_dir: Path = tmp_path_factory.mktemp("multihost-logs")
    network, built = build_cluster(log_dir)
    try:
        yield built
    finally:
        network.close()


@pytest.fixture
def report_drill():
    def report(line: str) -> None:
        DRILL_LINES.append(line)

    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if DRILL_LINES:
        terminalreporter.section("multi-host failover drills")
        for line in DRILL_LINES:
            terminalreporter.write_line(line)
