"""Admin pages that belong to no single model: the dispatch dashboard and the doctor.

They are plain views wrapped in `admin.site.admin_view` (staff login, CSRF, never cached) and
routed before `admin/` in the root URLconf, so no app's ModelAdmin has to own them. The admin
index gets a "Dispatch health" box linking to both, and lists the apps ledger first.
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
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


# The admin home in the order people need it: the ledger (rooms, dispatches) first, then the
# agents and rules, the watch; Django's own (users, periodic tasks) last. Within an app, the
# models named here first, in this order; the rest alphabetically, as Django lists them.
APP_ORDER = ("rooms_app", "agents_app", "watch_app")
MODEL_ORDER = {
    "rooms_app": ("Room", "Dispatch", "WebhookEvent"),
    "agents_app": ("Agent", "DispatchRule", "ApiClient"),
    "watch_app": ("Incident", "WorkerEndpoint", "CanarySchedule", "CanaryRun", "AlertTarget"),
}
_default_app_list = admin.site.get_app_list


def _app_list_in_order(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
    apps = _default_app_list(request, app_label)

    def app_rank(app: dict[str, Any]) -> tuple[int, str]:
        label = app["app_label"]
        return (APP_ORDER.index(label) if label in APP_ORDER else len(APP_ORDER), app["name"])

    for app in apps:
        order = MODEL_ORDER.get(app["app_label"], ())
        app["models"].sort(
            key=lambda m: (
                order.index(m["object_name"]) if m["object_name"] in order else len(order),
                m["name"],
            )
        )
    return sorted(apps, key=app_rank)


admin.site.get_app_list = _app_list_in_order  # type: ignore[method-assign]


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
