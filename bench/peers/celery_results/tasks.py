"""The peer's tasks."""

from bench.peers import tasks_common
from bench.peers.celery_results.app import app


@app.task(name="noop")
def noop() -> None:
    tasks_common.noop()


@app.task(name="stamp")
def stamp(sent: float) -> None:
    tasks_common.stamp(sent)
