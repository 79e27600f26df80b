from django.urls import re_path
from rest_framework.routers import SimpleRouter

from .health import HealthView, ReadinessView
from .schedules import ScheduleViewSet
from .views import JobViewSet, metrics_view
from .workflows import WorkflowViewSet

# "/?" : every path answers with and without a trailing slash (a POST must never be redirected).
router = SimpleRouter()
router.trailing_slash = "/?"
router.register("jobs", JobViewSet, basename="job")
router.register("schedules", ScheduleViewSet, basename="schedule")
router.register("workflows", WorkflowViewSet, basename="workflow")

urlpatterns = [
    re_path(r"^healthz/?$", HealthView.as_view(), name="healthz"),
    re_path(r"^readyz/?$", ReadinessView.as_view(), name="readyz"),
    re_path(r"^metrics/?$", metrics_view, name="metrics"),
    *router.urls,
]
