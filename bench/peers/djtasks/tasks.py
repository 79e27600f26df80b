"""The peer's tasks: django-tasks finds a task by its module path, so they are defined here."""

from django_tasks import task

from bench.peers import tasks_common


@task()
def noop() -> None:
    tasks_common.noop()


@task()
def stamp(sent: float) -> None:
    tasks_common.stamp(sent)
