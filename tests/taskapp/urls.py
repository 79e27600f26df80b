from django.urls import include, path

from .views import enqueue_add

urlpatterns = [
    path("taskapp/add", enqueue_add),
    path("", include("sentinelflow_site.urls")),
]
