from django.urls import re_path
from rest_framework.routers import SimpleRouter

from .failures import FailureGroupsView
from .flow import JobTypeDetailView, JobTypeListView, QueueListView, QueuePauseView, QueueResumeView
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
    re_path(r"^types/?$", JobTypeListView.as_view(), name="job-types"),
    re_path(r"^types/(?P<name>[^/]{1,200})/?$", JobTypeDetailView.as_view(), name="job-type"),
    re_path(r"^queues/?$", QueueListView.as_view(), name="queues"),
    re_path(r"^queues/(?P<name>[^/]{1,200})/pause/?$", QueuePauseView.as_view(), name="queue-pause"),
    re_path(r"^queues/(?P<name>[^/]{1,200})/resume/?$", QueueResumeView.as_view(), name="queue-resume"),
    re_path(r"^failures/?$", FailureGroupsView.as_view(), name="failures"),
    *router.urls,
]
