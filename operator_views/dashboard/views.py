"""The dashboard page in the admin, and the small JSON the open dashboard polls.

The dashboard is drawn from named sections (the health line and what needs attention, per
agent, per hour, live rooms missing an agent, last failures); the page renders them once, and `dashboard_live_view` renders the same templates
again as JSON so the page can swap them in while it is open, without a full reload.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from rooms_app.models import Room
from watch_app.selectors import watch_dashboard

from ..doctor.views import doctor_url
from ..helpers import admin_page_context, admin_url, duration_text, view_permission_require
from .charts import PALETTE, grouped_bar_chart, stacked_hours_chart
from .glance import glance_get
from .reads import (
    JOIN_MEASURE,
    agent_stats_get,
    failures_recent_list,
    hours_since_first_dispatch,
    outcomes_by_hour,
    rooms_missing_agents,
)

SECTIONS = ("glance", "per-agent", "per-hour", "waiting", "failures", "watch")
REFRESH_S = 5


def _sections(now: datetime) -> dict[str, Any]:
    """What the dashboard's sections show, as of `now`."""
    stats = agent_stats_get(now=now)
    agents = list(stats)
    rate = [
        ("last hour", PALETTE["hour"], [_pct(stats[a]["hour"].success_rate) for a in agents]),
        ("last day", PALETTE["day"], [_pct(stats[a]["day"].success_rate) for a in agents]),
    ]
    join = [
        ("p50 last hour", PALETTE["p50"], [stats[a]["hour"].p50_s for a in agents]),
        ("p95 last hour", PALETTE["p95"], [stats[a]["hour"].p95_s for a in agents]),
        ("p50 last day", "#9fc7da", [stats[a]["day"].p50_s for a in agents]),
        ("p95 last day", "#f2cf8a", [stats[a]["day"].p95_s for a in agents]),
    ]
    hours = hours_since_first_dispatch(outcomes_by_hour(now=now))
    # "Missing now" per agent counts the very rooms listed under "Live rooms missing an
    # expected agent" and in the attention list: one read of the ledger for all three.
    missing = rooms_missing_agents(now=now)
    missing_by_agent = Counter(m.agent_name for m in missing)
    watch = watch_dashboard(now=now)
    glance = glance_get(
        missing=missing,
        live_rooms=Room.objects.filter(status=Room.Status.ACTIVE).count(),
        incidents=watch["incidents"],
        presence=watch["presence"],
        canaries=watch["canaries"],
        now=now,
    )
    return {
        "now": now,
        "glance": glance,
        "join_measure": JOIN_MEASURE,
        "agents": [
            {"name": a, "hour": stats[a]["hour"], "day": stats[a]["day"], "missing": missing_by_agent[a]}
            for a in agents
        ],
        "rate_chart": grouped_bar_chart(
            title="Dispatch success rate by agent", groups=agents, series=rate, maximum=100, unit="%"
        )
        if agents
        else "",
        "join_chart": grouped_bar_chart(
            title="Time to join (seconds): LiveKit had the request -> agent joined",
            groups=agents,
            series=join,
            unit=" s",
            value_format="{:.1f}",
        )
        if agents
        else "",
        "hours_chart": stacked_hours_chart(
            title=f"Dispatches per hour, last {len(hours)} h, by outcome", buckets=hours
        )
        if hours
        else "",
        "missing": [
            {
                "room": m,
                "doctor_url": doctor_url(room_name=m.room_name, agent_name=m.agent_name),
                "admin_url": admin_url("admin:rooms_app_dispatch_change", m.dispatch_id),
                "room_url": admin_url("admin:rooms_app_room_change", m.room_id),
                "waiting": duration_text(m.waiting_s),
            }
            for m in missing
        ],
        "failures": [
            {
                "dispatch": d,
                "doctor_url": doctor_url(room_name=d.room.name, agent_name=d.agent_name),
                "admin_url": admin_url("admin:rooms_app_dispatch_change", d.pk),
            }
            for d in failures_recent_list()
        ],
        "watch": watch,
    }


def dashboard_view(request: HttpRequest) -> HttpResponse:
    view_permission_require(request)
    try:  # ?refresh=N: poll every N seconds (1 to 60); the browser tests use 1
        refresh_s = min(60, max(1, int(request.GET.get("refresh", REFRESH_S))))
    except ValueError:
        refresh_s = REFRESH_S
    context = {
        **admin_page_context(request, "Dispatch health"),
        **_sections(timezone.now()),
        "sections": SECTIONS,
        "live_url": reverse("dispatch-dashboard-live"),
        "refresh_ms": refresh_s * 1000,
        "doctor_url": reverse("dispatch-doctor"),
    }
    return render(request, "admin/dashboard/dashboard.html", context)


def dashboard_live_view(request: HttpRequest) -> JsonResponse:
    """The dashboard's sections rendered again, for the open page to swap in."""
    view_permission_require(request)
    context = _sections(timezone.now())
    html = {
        name: render_to_string(f"admin/dashboard/section_{name.replace('-', '_')}.html", context, request)
        for name in SECTIONS
    }
    return JsonResponse({"as_of": f"{context['now']:%Y-%m-%d %H:%M:%S}", "sections": html})


def _pct(rate: float | None) -> float | None:
    return None if rate is None else rate * 100
