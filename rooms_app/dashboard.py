"""The dispatch health dashboard and the doctor page, both in the admin.

Dashboard: per agent, the dispatch success rate and time-to-join p50/p95 over the last hour
and day, drawn as charts; rooms waiting for an agent right now and for how long; the last
failures, each one click away from the doctor's verdict.

Charts are inline SVG built here from the ledger: no JavaScript, no CDN (the admin must work
on machines with no internet), and a screenshot or a screen reader sees the same numbers as
the tables under them.

Time to join counts from when the agent was asked for: the CreateDispatch request for an
explicit dispatch, the room's start for an agent carried in a token (the wait for the first
participant to connect is not the agent's).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from .doctor import room_diagnose
from .models import WAITING_STATUSES, Dispatch, Room

FAILED_STATUSES = ("no_worker", "failed", "timed_out")
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
VIEW_PERMISSION = "rooms_app.view_dispatch"


# --- selectors ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentStats:
    agent_name: str
    dispatched: int
    joined: int
    failed: int
    waiting: int
    p50_s: float | None
    p95_s: float | None

    @property
    def success_rate(self) -> float | None:
        """Joined / (joined + failed); None while nothing has finished."""
        finished = self.joined + self.failed
        return self.joined / finished if finished else None


@dataclass(frozen=True, slots=True)
class _Row:
    agent_name: str
    status: str
    created_at: datetime
    start: datetime
    joined_at: datetime | None


def _rows(*, since: datetime) -> list[_Row]:
    values = Dispatch.objects.filter(created_at__gte=since).values_list(
        "agent_name", "status", "created_at", "requested_at", "joined_at", "room__started_at"
    )
    rows = []
    for agent_name, status, created, requested, joined, room_started in values:
        start = requested or (max(created, room_started) if room_started else created)
        rows.append(_Row(agent_name, status, created, start, joined))
    return rows


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile: a value that really occurred, never an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _stats(agent_name: str, rows: Sequence[_Row]) -> AgentStats:
    waits = [(r.joined_at - r.start).total_seconds() for r in rows if r.joined_at is not None]
    waits = [w for w in waits if w >= 0]
    return AgentStats(
        agent_name=agent_name,
        dispatched=len(rows),
        joined=sum(1 for r in rows if r.joined_at is not None or r.status == "agent_joined"),
        failed=sum(1 for r in rows if r.status in FAILED_STATUSES),
        waiting=sum(1 for r in rows if r.status in WAITING_STATUSES),
        p50_s=percentile(waits, 0.50),
        p95_s=percentile(waits, 0.95),
    )


def agent_stats_get(*, now: datetime | None = None) -> dict[str, dict[str, AgentStats]]:
    """Per agent, its stats over the last hour and the last day: {agent: {"hour", "day"}}."""
    now = now or timezone.now()
    rows = _rows(since=now - DAY)
    by_agent: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        by_agent[row.agent_name].append(row)
    hour_start = now - HOUR
    return {
        name: {
            "hour": _stats(name, [r for r in agent_rows if r.created_at >= hour_start]),
            "day": _stats(name, agent_rows),
        }
        for name, agent_rows in sorted(by_agent.items())
    }


@dataclass(frozen=True, slots=True)
class HourBucket:
    start: datetime
    joined: int
    failed: int
    other: int


def outcomes_by_hour(*, now: datetime | None = None, hours: int = 24) -> list[HourBucket]:
    """Dispatches created in each of the last `hours` hours, by outcome so far."""
    now = now or timezone.now()
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    counts: dict[int, list[int]] = {i: [0, 0, 0] for i in range(hours)}
    for row in _rows(since=first):
        index = int((row.created_at - first).total_seconds() // 3600)
        if 0 <= index < hours:
            slot = 0 if row.joined_at is not None else 1 if row.status in FAILED_STATUSES else 2
            counts[index][slot] += 1
    return [HourBucket(first + timedelta(hours=i), *counts[i]) for i in range(hours)]


@dataclass(frozen=True, slots=True)
class WaitingRoom:
    room_name: str
    agent_name: str
    status: str
    status_label: str
    dispatch_id: int
    waiting_s: float
    overdue: bool


def rooms_waiting_list(*, now: datetime | None = None, limit: int = 50) -> list[WaitingRoom]:
    """Live rooms whose agent has been asked for but has not joined, longest wait first."""
    now = now or timezone.now()
    waiting = (
        Dispatch.objects.filter(status__in=WAITING_STATUSES, room__status=Room.Status.ACTIVE)
        .select_related("room")
        .order_by("created_at")[:limit]
    )
    answer = []
    for d in waiting:
        start = d.requested_at or max(d.created_at, d.room.started_at or d.created_at)
        answer.append(
            WaitingRoom(
                room_name=d.room.name,
                agent_name=d.agent_name,
                status=d.status,
                status_label=d.get_status_display(),
                dispatch_id=d.pk,
                waiting_s=max(0.0, (now - start).total_seconds()),
                overdue=bool(d.deadline_at and d.deadline_at < now),
            )
        )
    answer.sort(key=lambda w: w.waiting_s, reverse=True)
    return answer


def failures_recent_list(*, limit: int = 20) -> list[Dispatch]:
    return list(
        Dispatch.objects.filter(status__in=FAILED_STATUSES)
        .select_related("room")
        .order_by("-ended_at", "-id")[:limit]
    )


# --- charts ---------------------------------------------------------------------------------

PALETTE = {"hour": "#417690", "day": "#79aec8", "p50": "#417690", "p95": "#e0a030"}
OUTCOME_COLOURS = (("joined", "#3a9d5d"), ("failed", "#ba2121"), ("other", "#bbbbbb"))


def _svg(width: int, height: int, title: str, body: list[str]) -> SafeString:
    content = "".join(body)
    return mark_safe(  # noqa: S308  every text inside went through escape()
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dp-chart" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{content}</svg>"
    )


def grouped_bar_chart(
    *,
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    maximum: float | None = None,
    unit: str = "",
    value_format: str = "{:.0f}",
) -> SafeString:
    """Bars per group (e.g. agent), one per series (label, colour, values); missing values
    are shown as "–" so an empty bar is not mistaken for zero."""
    left, top, bottom, bar, gap = 48, 28, 46, 18, 4
    group_width = len(series) * (bar + gap) + 26
    legend = [(label, colour) for label, colour, _ in series]
    width = max(
        360,
        left + 16 + group_width * max(1, len(groups)),
        left + _text_width(title, 13),
        left + _legend_width(legend) + 8,
    )
    height = 230
    plot = height - top - bottom
    values = [v for _, _, vs in series for v in vs if v is not None]
    ticks = _ticks(maximum or (max(values) if values else 1.0))
    top_value = ticks[-1]
    body = [
        f'<text x="{left}" y="16" font-size="13" font-weight="bold" fill="#333">{escape(title)}</text>',
        *_grid(ticks, left=left, right=width - 8, top=top, plot=plot, unit=unit),
    ]
    for g, group in enumerate(groups):
        x0 = left + 12 + g * group_width
        for s, (_, colour, vs) in enumerate(series):
            value = vs[g]
            x = x0 + s * (bar + gap)
            if value is None:
                body.append(
                    f'<text x="{x + bar / 2}" y="{top + plot - 4}" font-size="10" text-anchor="middle" fill="#999">–</text>'
                )
                continue
            h = max(1.0, plot * min(value, top_value) / top_value)
            y = top + plot - h
            body.append(
                f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(value_format.format(value) + unit)}</title></rect>"
            )
            body.append(
                f'<text x="{x + bar / 2}" y="{y - 3:.1f}" font-size="9" text-anchor="middle" fill="#333">'
                f"{escape(value_format.format(value) + unit)}</text>"
            )
        label = group if len(group) <= 18 else group[:17] + "…"
        body.append(
            f'<text x="{x0 + (group_width - 26) / 2}" y="{height - bottom + 16}" font-size="11" '
            f'text-anchor="middle" fill="#333">{escape(label)}</text>'
        )
    body += _legend(legend, x=left, y=height - 18)
    return _svg(width, height, title, body)


def stacked_hours_chart(*, title: str, buckets: Sequence[HourBucket]) -> SafeString:
    left, top, bottom, width, height = 48, 28, 46, 720, 220
    plot = height - top - bottom
    totals = [b.joined + b.failed + b.other for b in buckets]
    ticks = _ticks(max(totals) if totals and max(totals) else 1.0, integer=True)
    top_value = ticks[-1]
    step = (width - left - 12) / max(1, len(buckets))
    body = [
        f'<text x="{left}" y="16" font-size="13" font-weight="bold" fill="#333">{escape(title)}</text>',
        *_grid(ticks, left=left, right=width - 8, top=top, plot=plot),
    ]
    for i, bucket in enumerate(buckets):
        x = left + 4 + i * step
        y = top + plot
        for key, colour in OUTCOME_COLOURS:
            count = getattr(bucket, key)
            if not count:
                continue
            h = plot * count / top_value
            y -= h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{step - 3:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{bucket.start:%H:00} UTC: {count} {key}</title></rect>"
            )
        if i % 3 == 0:
            body.append(
                f'<text x="{x + step / 2:.1f}" y="{top + plot + 14}" font-size="10" text-anchor="middle" '
                f'fill="#666">{bucket.start:%H:00}</text>'
            )
    names = {"joined": "agent joined", "failed": "failed", "other": "waiting or cancelled"}
    body += _legend([(names[key], colour) for key, colour in OUTCOME_COLOURS], x=left, y=height - 18)
    return _svg(width, height, title, body)


def _ticks(maximum: float, *, integer: bool = False) -> list[float]:
    """Round axis ticks from 0 to at least `maximum`: steps of 1, 2, 2.5 or 5 times a power
    of ten (no 2.5 for counts), four or five of them."""
    maximum = maximum if maximum > 0 else 1.0
    raw = maximum / 4
    power = 10 ** math.floor(math.log10(raw))
    factors = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(f * power for f in factors if f * power >= raw - 1e-12)
    if integer:
        step = max(1.0, step)
    count = max(1, math.ceil(maximum / step - 1e-9))
    return [step * i for i in range(count + 1)]


def _grid(ticks: Sequence[float], *, left: int, right: int, top: int, plot: int, unit: str = "") -> list[str]:
    parts = []
    for value in ticks:
        y = top + plot - plot * value / ticks[-1]
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#666">'
            f"{escape(f'{value:g}{unit}')}</text>"
        )
    return parts


def _text_width(text: str, size: int) -> int:
    return int(len(text) * size * 0.6) + 8  # about right for the admin's sans-serif


def _legend_width(items: Sequence[tuple[str, str]]) -> int:
    return sum(14 + _text_width(label, 11) + 10 for label, _ in items)


def _legend(items: Sequence[tuple[str, str]], *, x: int, y: int) -> list[str]:
    parts = []
    for label, colour in items:
        parts.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{y + 9}" font-size="11" fill="#333">{escape(label)}</text>')
        x += 14 + _text_width(label, 11) + 10
    return parts


# --- admin views ----------------------------------------------------------------------------


def doctor_url(*, room_name: str, agent_name: str | None = None) -> str:
    query: dict[str, str] = {"room": room_name}
    if agent_name == "":
        query["unnamed"] = "1"
    elif agent_name is not None:
        query["agent"] = agent_name
    return reverse("dispatch-doctor") + "?" + urlencode(query)


@admin.display(description="doctor")
def doctor_column(obj: Room | Dispatch) -> str:
    """A changelist column for rooms and dispatches: the doctor's verdict one click away."""
    if isinstance(obj, Dispatch):
        url = doctor_url(room_name=obj.room.name, agent_name=obj.agent_name)
    else:
        url = doctor_url(room_name=obj.name)
    return format_html('<a href="{}" class="doctor-link">diagnose</a>', url)


def _admin_url(name: str, *args: Any) -> str:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:  # the ledger's admin is not registered (e.g. a trimmed-down site)
        return ""


def _context(request: HttpRequest, title: str) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title}


def dashboard_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied
    now = timezone.now()
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
    failures = [
        {
            "dispatch": d,
            "doctor_url": doctor_url(room_name=d.room.name, agent_name=d.agent_name),
            "admin_url": _admin_url("admin:rooms_app_dispatch_change", d.pk),
        }
        for d in failures_recent_list()
    ]
    waiting = [
        {
            "room": w,
            "doctor_url": doctor_url(room_name=w.room_name, agent_name=w.agent_name),
            "admin_url": _admin_url("admin:rooms_app_dispatch_change", w.dispatch_id),
            "waiting": _duration(w.waiting_s),
        }
        for w in rooms_waiting_list(now=now)
    ]
    context = {
        **_context(request, "Dispatch health"),
        "now": now,
        "agents": [{"name": a, "hour": stats[a]["hour"], "day": stats[a]["day"]} for a in agents],
        "rate_chart": grouped_bar_chart(
            title="Dispatch success rate by agent", groups=agents, series=rate, maximum=100, unit="%"
        )
        if agents
        else "",
        "join_chart": grouped_bar_chart(
            title="Time from dispatch to agent joined (seconds)",
            groups=agents,
            series=join,
            unit=" s",
            value_format="{:.1f}",
        )
        if agents
        else "",
        "hours_chart": stacked_hours_chart(
            title="Dispatches per hour, last 24 h, by outcome", buckets=outcomes_by_hour(now=now)
        ),
        "waiting": waiting,
        "failures": failures,
        "doctor_url": reverse("dispatch-doctor"),
    }
    return render(request, "admin/dashboard/dashboard.html", context)


def doctor_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied
    room = request.GET.get("room", "").strip()
    agent = request.GET.get("agent", "").strip()
    # An empty field means every expected agent; the unnamed agent is asked for explicitly.
    agent_name = "" if request.GET.get("unnamed") == "1" else agent or None
    identity = request.GET.get("identity", "").strip() or None
    context: dict[str, Any] = {
        **_context(request, "Dispatch doctor"),
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
        context["dispatches_url"] = _admin_url("admin:rooms_app_dispatch_changelist")
        context["api_url"] = reverse("doctor:room-diagnosis", args=[room])
    return render(request, "admin/doctor/doctor.html", context)


def _pct(rate: float | None) -> float | None:
    return None if rate is None else rate * 100


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
