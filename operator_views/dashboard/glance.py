"""The dashboard's first screen: is dispatch healthy right now? One line (green, amber or red,
with the reason), then each thing that needs attention with a link to the doctor.

What needs attention, worst first: LiveKit not answering; live rooms missing an agent the ledger
expects there (the same answer the API's room state and the rooms list give); open incidents;
agents whose workers are offline, full or stale; failing canaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from django.urls import reverse

from dispatchportal.reserved import CANARY_ROOM_PREFIX
from rooms_app.models import Dispatch
from rooms_app.selectors import livekit_status
from watch_app.models import Incident
from watch_app.selectors import CanarySummary, Presence, PresenceState

from ..doctor.views import doctor_url
from ..helpers import admin_url, duration_text
from .reads import MissingAgent

RED, AMBER, GREEN = "red", "amber", "green"
_RANK = {GREEN: 0, AMBER: 1, RED: 2}


@dataclass(frozen=True, slots=True)
class Attention:
    level: str  # red or amber
    kind: str  # livekit, room, incident, worker, canary
    text: str
    doctor_url: str
    admin_url: str = ""
    admin_label: str = ""


@dataclass(frozen=True, slots=True)
class Glance:
    level: str
    reason: str
    items: list[Attention]


def _agent_doctor_url(agent_name: str) -> str:
    """The doctor on the agent's latest room in the ledger (a room is what the doctor reads);
    the doctor's form with the agent filled in when the agent never had one."""
    latest = (
        Dispatch.objects.filter(agent_name=agent_name)
        .exclude(room__name__startswith=CANARY_ROOM_PREFIX)
        .order_by("-id")
        .values_list("room__name", flat=True)
        .first()
    )
    if latest is not None:
        return doctor_url(room_name=latest, agent_name=agent_name)
    return reverse("dispatch-doctor") + "?" + urlencode({"agent": agent_name})


def _room_item(m: MissingAgent) -> Attention:
    agent = f"'{m.agent_name}'" if m.agent_name else "the unnamed agent"
    if m.ended:
        text = f"Room '{m.room_name}' has no {agent}: {m.status_label} (attempt {m.attempt})"
        text += f": {m.last_error}" if m.last_error else ""
    else:
        text = (
            f"Room '{m.room_name}' is waiting for {agent} ({m.status_label}) for {duration_text(m.waiting_s)}"
        )
        text += ", past its join deadline" if m.overdue else ""
    return Attention(
        RED if m.overdue else AMBER,
        "room",
        text,
        doctor_url(room_name=m.room_name, agent_name=m.agent_name),
        admin_url("admin:rooms_app_dispatch_change", m.dispatch_id),
        f"dispatch #{m.dispatch_id}",
    )


def _incident_item(incident: Incident) -> Attention:
    room = str(incident.detail.get("room", "")) if isinstance(incident.detail, dict) else ""
    if room and not room.startswith(CANARY_ROOM_PREFIX):
        doctor = doctor_url(room_name=room, agent_name=incident.subject or None)
    elif incident.subject:
        doctor = _agent_doctor_url(incident.subject)
    else:
        doctor = reverse("dispatch-doctor")
    quiet = incident.acknowledged_at is not None or incident.muted
    note = ""
    if incident.acknowledged_at is not None:
        note = f" (acknowledged by {incident.acknowledged_by or 'staff'})"
    elif incident.muted:
        note = " (muted)"
    return Attention(
        AMBER if quiet else RED,
        "incident",
        f"Open incident since {incident.opened_at:%H:%M:%S} UTC: {incident.summary}{note}",
        doctor,
        admin_url("admin:watch_app_incident_change", incident.pk),
        "incident",
    )


def _worker_item(p: Presence) -> Attention | None:
    if p.state not in (PresenceState.OFFLINE, PresenceState.FULL, PresenceState.STALE):
        return None
    level = RED if p.state == PresenceState.OFFLINE else AMBER
    return Attention(level, "worker", f"Workers: {p.message}", _agent_doctor_url(p.agent_name))


def _canary_item(c: CanarySummary) -> Attention | None:
    if not c.enabled or c.failures_in_a_row == 0:
        return None
    text = f"Canary for '{c.agent_name}' failed {c.failures_in_a_row} time(s) in a row"
    text += f": {c.last_error}" if c.last_error else ""
    return Attention(RED, "canary", text, _agent_doctor_url(c.agent_name))


def glance_get(
    *,
    missing: list[MissingAgent],
    live_rooms: int,
    incidents: list[Incident],
    presence: list[Presence],
    canaries: list[CanarySummary],
    now: datetime,
) -> Glance:
    """The health line and the list under it, from what the dashboard's sections read."""
    items: list[Attention] = []
    status = livekit_status()
    if not status.ok:
        items.append(Attention(RED, "livekit", status.problem, reverse("dispatch-doctor")))
    items += [_room_item(m) for m in missing]
    items += [_incident_item(i) for i in incidents]
    items += [w for w in (_worker_item(p) for p in presence) if w is not None]
    items += [c for c in (_canary_item(c) for c in canaries) if c is not None]
    items.sort(key=lambda a: -_RANK[a.level])  # stable: within a level, the order above
    level = max((a.level for a in items), key=_RANK.__getitem__, default=GREEN)
    return Glance(level, _reason(items, missing=missing, live_rooms=live_rooms), items)


def _reason(items: list[Attention], *, missing: list[MissingAgent], live_rooms: int) -> str:
    if not items:
        live = f"all {live_rooms} live room(s) have their expected agents" if live_rooms else "no live room"
        return f"Healthy: {live}, no open incident, no worker offline or full, no failing canary."
    parts = []
    if any(a.kind == "livekit" for a in items):
        parts.append("LiveKit cannot be asked")
    rooms = {m.room_name for m in missing}
    given_up = {m.room_name for m in missing if m.overdue}
    if rooms:
        part = f"{len(rooms)} live room(s) missing an expected agent"
        part += (
            f" ({len(given_up)} given up or past the deadline)"
            if given_up
            else " (still within the deadline)"
        )
        parts.append(part)
    for kind, word in (
        ("incident", "open incident(s)"),
        ("worker", "agent(s) with workers offline or full"),
        ("canary", "failing canary(ies)"),
    ):
        count = sum(1 for a in items if a.kind == kind)
        if count:
            parts.append(f"{count} {word}")
    head = "Not healthy" if any(a.level == RED for a in items) else "Needs a look"
    return f"{head}: " + "; ".join(parts) + "."
