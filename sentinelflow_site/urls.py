from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from jobs.admin import ThrottledAuthenticationForm

# The browsable API's log in and log out (what rest_framework.urls gives), with the admin's
# failed-login budgets: a second login page must not be a way around them.
api_auth_urls = (
    [
        path(
            "login/",
            auth_views.LoginView.as_view(
                template_name="rest_framework/login.html", authentication_form=ThrottledAuthenticationForm
            ),
            name="login",
        ),
        path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    ],
    "rest_framework",
)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api-auth/", include(api_auth_urls)),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("jobs.api.urls")),
]

handler400 = "sentinelflow_site.exception_handler.bad_request"
handler404 = "sentinelflow_site.exception_handler.not_found"
handler500 = "sentinelflow_site.exception_handler.server_error"
