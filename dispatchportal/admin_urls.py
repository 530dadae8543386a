"""Admin pages that belong to no single model: the dispatch dashboard and the doctor.

They are plain views wrapped in `admin.site.admin_view` (staff login, CSRF, never cached) and
routed before `admin/` in the root URLconf, so no app's ModelAdmin has to own them. The admin
index gets a "Dispatch health" box linking to both.
"""

from django.contrib import admin
from django.urls import URLPattern, path, reverse_lazy

from operator_views.dashboard import dashboard_live_view, dashboard_view
from operator_views.doctor.views import doctor_view
from operator_views.test_call import TestCallRoomApi, TestCallTokenApi, test_call_view

admin.site.index_template = "admin/dashboard/index.html"
admin.site.site_header = admin.site.site_title = "Dispatch Portal"
admin.site.index_title = "Agents, rules and dispatches"
# The app list on every page's left costs a laptop screen 300 px that the ledger's columns need;
# the admin home and the breadcrumbs lead everywhere it does.
admin.site.enable_nav_sidebar = False
# A lazy URL (reversed when a page renders; the URLconf is not loaded yet): django-stubs type
# site_url as a plain str.
admin.site.site_url = reverse_lazy("api-docs")  # type: ignore[assignment]  # the portal's only page outside the admin


def admin_urlpatterns() -> list[URLPattern]:
    return [
        path("admin/dispatch-dashboard/", admin.site.admin_view(dashboard_view), name="dispatch-dashboard"),
        path(
            "admin/dispatch-dashboard/live.json",
            admin.site.admin_view(dashboard_live_view),
            name="dispatch-dashboard-live",
        ),
        path("admin/dispatch-doctor/", admin.site.admin_view(doctor_view), name="dispatch-doctor"),
        # The test call's JSON answers 403 to anyone but staff (no login redirect for a script).
        path("admin/test-call/", admin.site.admin_view(test_call_view), name="test-call"),
        path("admin/test-call/token.json", TestCallTokenApi.as_view(), name="test-call-token"),
        path("admin/test-call/room.json", TestCallRoomApi.as_view(), name="test-call-room"),
    ]
