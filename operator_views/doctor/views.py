"""The doctor's page in the admin, and the doctor's link wherever a room is shown there (the
helpers it shares with the other operator pages are in `operator_views.helpers`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html

from rooms_app.models import Dispatch, Room, WebhookEvent

from ..helpers import admin_page_context, admin_url, view_permission_require
from .checks import room_diagnose


def doctor_url(*, room_name: str, agent_name: str | None = None) -> str:
    query: dict[str, str] = {"room": room_name}
    if agent_name == "":
        query["unnamed"] = "1"
    elif agent_name is not None:
        query["agent"] = agent_name
    return reverse("dispatch-doctor") + "?" + urlencode(query)


@admin.display(description="doctor")
def doctor_column(obj: Room | Dispatch | WebhookEvent) -> str:
    """A changelist column wherever a room is shown: the doctor's verdict one click away."""
    if isinstance(obj, Dispatch):
        url = doctor_url(room_name=obj.room.name, agent_name=obj.agent_name)
    elif isinstance(obj, WebhookEvent):
        if not obj.room_name:
            return "-"
        url = doctor_url(room_name=obj.room_name)
    else:
        url = doctor_url(room_name=obj.name)
    return format_html('<a href="{}" class="doctor-link">diagnose</a>', url)


def doctor_view(request: HttpRequest) -> HttpResponse:
    view_permission_require(request)
    room = request.GET.get("room", "").strip()
    agent = request.GET.get("agent", "").strip()
    # An empty field means every expected agent; the unnamed agent is asked for explicitly.
    agent_name = "" if request.GET.get("unnamed") == "1" else agent or None
    identity = request.GET.get("identity", "").strip() or None
    context: dict[str, Any] = {
        **admin_page_context(request, "Dispatch doctor"),
        "room": room,
        "agent": agent,
        "unnamed": agent_name == "",
        "identity": identity or "",
        "dashboard_url": reverse("dispatch-dashboard"),
    }
    if room:
        diagnosis = room_diagnose(room_name=room, agent_name=agent_name, identity=identity)
        context["diagnosis"] = diagnosis
        context["first_broken"] = diagnosis.first_broken
        context["dispatches_url"] = admin_url("admin:rooms_app_dispatch_changelist")
        context["api_url"] = reverse("doctor:room-diagnosis", args=[room])
    return render(request, "admin/doctor/doctor.html", context)
