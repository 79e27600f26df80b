from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from prometheus_client import REGISTRY

        from .handlers import load_handlers
        from .metrics import JobMetricsCollector

        load_handlers()
        # After the handlers: the schema lists the job types. Importing it registers the X-API-Key scheme.
        from .api import schema  # noqa: F401

        # ready() can run twice (autoreload, tests); register the collector once.
        if not any(isinstance(c, JobMetricsCollector) for c in list(REGISTRY._collector_to_names)):
            REGISTRY.register(JobMetricsCollector())
