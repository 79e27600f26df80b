"""The peer's tasks, registered on the Django integration's app."""

from procrastinate.contrib.django import app

from bench.peers import tasks_common


@app.task(name="noop")
def noop() -> None:
    tasks_common.noop()


@app.task(name="stamp")
def stamp(sent: float) -> None:
    tasks_common.stamp(sent)
