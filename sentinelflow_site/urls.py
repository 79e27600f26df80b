from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("", include("jobs.urls")),
]

handler400 = "sentinelflow_site.exception_handler.bad_request"
handler404 = "sentinelflow_site.exception_handler.not_found"
handler500 = "sentinelflow_site.exception_handler.server_error"
