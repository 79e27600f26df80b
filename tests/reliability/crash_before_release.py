"""Loaded into one drill worker (SENTINELFLOW_HANDLER_MODULES): the worker SIGKILLs itself at the first release
of dependents, that is right after a batch's outcomes are committed and before any dependent is released, the
window jobs.services.dependencies leaves to the sentinel."""

from __future__ import annotations

import os
import signal
from typing import Any

from jobs.services import dependencies


def _die_before_releasing(**kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


dependencies.dependents_release = _die_before_releasing
