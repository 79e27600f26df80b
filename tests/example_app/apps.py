from django.apps import AppConfig


class ExampleAppConfig(AppConfig):
    """An installed app that ships a job type, as a project using sentinelflow would."""

    name = "tests.example_app"
    label = "example_app"
