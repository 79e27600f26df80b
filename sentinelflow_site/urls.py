from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("jobs.api.urls")),
]

handler400 = "sentinelflow_site.exception_handler.bad_request"
handler404 = "sentinelflow_site.exception_handler.not_found"
handler500 = "sentinelflow_site.exception_handler.server_error"
