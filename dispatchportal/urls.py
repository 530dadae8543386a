"""Top-level routes: `/` (to the dashboard), admin (with the dashboard and doctor pages), the
versioned API, the LiveKit webhook, Prometheus metrics and the schema (the health endpoints are
answered by `health.ProbeMiddleware`)."""

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .admin_urls import admin_urlpatterns
from .metrics import metrics_view

urlpatterns = [
    # First: the token endpoint is the route every frontend calls, resolved before the rest.
    path("api/v1/", include("agents_app.urls")),
    # A newcomer opening the portal lands on the dashboard (the admin login first).
    path("", RedirectView.as_view(pattern_name="dispatch-dashboard"), name="home"),
    *admin_urlpatterns(),  # before admin/: admin's catch-all would answer them with a 404
    path("admin/", admin.site.urls),
    path("", include("operator_views.doctor.urls")),
    path("", include("rooms_app.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("favicon.ico", RedirectView.as_view(url=static("dispatchportal/favicon.svg")), name="favicon"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

handler404 = "dispatchportal.exceptions.page_not_found"
handler500 = "dispatchportal.exceptions.server_error"
