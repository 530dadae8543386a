"""Reads for the admin, the dashboard and the doctor: is anyone serving agent 'x'?"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from dispatchportal.stats import percentile
from rooms_app.models import Dispatch, Room, WebhookEvent

from .models import WorkerEndpoint
from .net import safe_host


class PresenceState:
    ONLINE = "online"  # a worker answered recently and has room for jobs
    FULL = "full"  # workers answered recently, every one at or above the full load
    STALE = "stale"  # workers answered once, not recently
    OFFLINE = "offline"  # health URLs registered, none ever answered
    SEEN = "seen"  # no health URL; the agent joined a room recently (ledger)
    UNKNOWN = "unknown"  # no health URL, not seen recently


@dataclass(frozen=True, slots=True)
class WorkerView:
    url: str
    healthy: bool | None
    load: float | None
    active_jobs: int | None
    answered_at: datetime | None
    error: str
    registered_as: str


@dataclass(frozen=True, slots=True)
class Presence:
    agent_name: str
    state: str
    message: str
    workers: list[WorkerView] = field(default_factory=list)
    last_joined_at: datetime | None = None
    last_job_at: datetime | None = None


def _ago(now: datetime, then: datetime) -> str:
    seconds = int((now - then).total_seconds())
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 5400:
        return f"{round(seconds / 60)} minutes ago"
    return f"{round(seconds / 3600)} hours ago"


def _fresh_window() -> timedelta:
    # Three missed polls before a worker counts as not answering.
    return timedelta(
        seconds=3 * float(settings.WORKER_POLL_INTERVAL_S) + float(settings.WORKER_POLL_TIMEOUT_S)
    )


def agents_presence(*, agent_names: list[str], now: datetime | None = None) -> dict[str, Presence]:
    """Presence of each named agent, from its polled health URLs and the ledger's joins."""
    now = now or timezone.now()
    endpoints: dict[str, list[WorkerEndpoint]] = {}
    for e in WorkerEndpoint.objects.filter(agent__agent_name__in=agent_names, enabled=True).select_related(
        "agent"
    ):
        endpoints.setdefault(e.agent.agent_name, []).append(e)
    seen: dict[str, dict[str, Any]] = {
        row["agent_name"]: dict(row)
        for row in Dispatch.objects.filter(agent_name__in=agent_names)
        .exclude(joined_at__isnull=True, job_assigned_at__isnull=True)
        .values("agent_name")
        .annotate(joined=Max("joined_at"), job=Max("job_assigned_at"))
    }
    # Agents LiveKit reported joining (webhooks' lk.agent_name), managed or not, canaries included.
    for row in (
        WebhookEvent.objects.filter(agent_name__in=agent_names, event="participant_joined")
        .values("agent_name")
        .annotate(at=Max("received_at"))
    ):
        entry = seen.setdefault(row["agent_name"], {})
        if entry.get("joined") is None or row["at"] > entry["joined"]:
            entry["joined"] = row["at"]
    return {name: _presence(name, endpoints.get(name, []), seen.get(name, {}), now) for name in agent_names}


def agent_presence(*, agent_name: str, now: datetime | None = None) -> Presence:
    return agents_presence(agent_names=[agent_name], now=now)[agent_name]


def _presence(name: str, endpoints: list[WorkerEndpoint], seen: dict[str, Any], now: datetime) -> Presence:
    views = [
        WorkerView(
            e.url, e.healthy, e.load, e.active_jobs, e.answered_at, e.last_error, e.reported_agent_name
        )
        for e in endpoints
    ]
    joined, job = seen.get("joined"), seen.get("job")
    answer = functools.partial(Presence, name, workers=views, last_joined_at=joined, last_job_at=job)
    if endpoints:
        fresh = [
            e for e in endpoints if e.healthy and e.answered_at and now - e.answered_at <= _fresh_window()
        ]
        if fresh:
            full_load = float(settings.WORKER_FULL_LOAD)
            lowest = min(e.load or 0.0 for e in fresh)
            jobs = sum(e.active_jobs or 0 for e in fresh)
            if lowest >= full_load:
                return answer(PresenceState.FULL, f"workers for '{name}' are full (load {lowest:.2f})")
            return answer(
                PresenceState.ONLINE,
                f"{len(fresh)} worker(s) online for '{name}' (load {lowest:.2f}, {jobs} active job(s))",
            )
        answered = [e.answered_at for e in endpoints if e.answered_at]
        if answered:
            return answer(PresenceState.STALE, f"workers for '{name}' answered {_ago(now, max(answered))}")
        errors = "; ".join(sorted({e.last_error for e in endpoints if e.last_error}))
        return answer(
            PresenceState.OFFLINE, f"no worker online for '{name}'" + (f" ({errors})" if errors else "")
        )
    last = max((t for t in (joined, job) if t), default=None)
    if last is not None and now - last <= timedelta(hours=1):
        return answer(
            PresenceState.SEEN,
            f"an agent '{name}' took a job or joined a room {_ago(now, last)} (no health URL registered)",
        )
    return answer(
        PresenceState.UNKNOWN, f"no health URL registered for '{name}' and no agent seen in the last hour"
    )


@dataclass(frozen=True, slots=True)
class CanarySummary:
    agent_name: str
    enabled: bool
    last_status: str  # success, failed, running, or "" (never ran)
    last_error: str
    last_started_at: datetime | None
    failures_in_a_row: int
    p50_join_s: float | None
    p95_join_s: float | None
    runs: int


def canaries_summary(*, window: int = 20) -> list[CanarySummary]:
    """Each canary's latest outcome and its dispatch-to-join p50/p95 over the last `window` runs."""
    from .models import CanaryRun, CanarySchedule

    out = []
    for schedule in CanarySchedule.objects.select_related("agent").order_by("agent__agent_name"):
        name = schedule.agent.agent_name
        runs = list(CanaryRun.objects.filter(agent_name=name).order_by("-started_at", "-id")[:window])
        finished = [r for r in runs if r.status != CanaryRun.Status.RUNNING]
        streak = 0
        for r in finished:
            if r.status != CanaryRun.Status.FAILED:
                break
            streak += 1
        joins = [r.join_s for r in finished if r.status == CanaryRun.Status.SUCCESS and r.join_s is not None]
        last = runs[0] if runs else None
        out.append(
            CanarySummary(
                agent_name=name,
                enabled=schedule.enabled,
                last_status=last.status if last else "",
                last_error=last.error if last else "",
                last_started_at=last.started_at if last else None,
                failures_in_a_row=streak,
                p50_join_s=percentile(joins, 0.5),
                p95_join_s=percentile(joins, 0.95),
                runs=len(runs),
            )
        )
    return out


def watch_dashboard(*, now: datetime | None = None) -> dict[str, Any]:
    """What the dashboard's 'Workers, canaries and alerts' block shows (template
    `watch_app/dashboard_block.html`): open incidents, each enabled agent's presence, canaries."""
    from agents_app.models import Agent

    from .models import Incident

    names = list(
        Agent.objects.filter(enabled=True).order_by("agent_name").values_list("agent_name", flat=True)
    )
    return {
        "incidents": list(Incident.objects.filter(status=Incident.Status.OPEN).order_by("-opened_at")[:20]),
        "presence": list(agents_presence(agent_names=names, now=now).values()),
        "canaries": canaries_summary(),
    }


# --- a worker that stopped answering while its agents are in rooms ---------------------------

# What `watch_app.net` says when no HTTP answer came at all (the process is gone or hung), as
# opposed to "answered 503" (alive, but not connected to LiveKit: its jobs may still run).
_NO_ANSWER = ("cannot reach ", " timed out after ")


def no_answer(error: str) -> bool:
    """The poll got no HTTP answer at all: refused, reset, unreachable or timed out."""
    return any(marker in error for marker in _NO_ANSWER)


@dataclass(frozen=True, slots=True)
class WorkerSilence:
    """One of an agent's workers stopped answering its health URL while it ran jobs.

    `holds`: the agent in question was on it: the silent worker answered after that agent
    joined, reporting at least as many jobs as the agent has joined dispatches in live rooms,
    and every other registered worker of the agent, polled since that join, runs no job. (A
    worker's `/worker` reports a job count, not job ids, so with other workers busy the portal
    cannot tell which rooms' agents died: `holds` is False and LiveKit's own participant
    timeout, about 20 s, decides.)"""

    agent_name: str
    url: str
    last_answer_at: datetime
    jobs: int
    error: str
    holds: bool

    def seconds_silent(self, now: datetime) -> float:
        return max(0.0, (now - self.last_answer_at).total_seconds())

    def described(self, now: datetime, *, with_error: bool = True) -> str:
        """For the doctor: how long ago, as of `now`; the poll's error (it names the worker's
        internal address) only for callers who may see it (staff)."""
        error = f" ({self.error})" if with_error else ""
        return f"the agent's worker stopped answering {self.seconds_silent(now):.0f} s ago{error}"

    def reason(self) -> str:
        """For the ledger (`last_error`, which API clients read): dated, so it stays true when
        read later, and without the worker's address (its endpoint's admin page has the error)."""
        return (
            f"the agent's worker stopped answering its health URL (last answer "
            f"{self.last_answer_at:%H:%M:%S} UTC, {self.jobs} job(s) then)"
        )


def agent_worker_silence(
    *, agent_name: str, joined_at: datetime | None, now: datetime | None = None
) -> WorkerSilence | None:
    """The silent worker that held agent `agent_name`'s job in a room where it joined at
    `joined_at`, or the likeliest one (`holds` False) when that cannot be told; None when
    none of the agent's registered workers went silent after that join."""
    endpoints = list(WorkerEndpoint.objects.filter(agent__agent_name=agent_name, enabled=True))
    since = joined_at or (now or timezone.now())
    silent = [
        e
        for e in endpoints
        if e.healthy is False
        and no_answer(e.last_error)
        and e.answered_at is not None
        and e.answered_at >= since
        and (e.active_jobs or 0) >= 1
    ]
    if not silent:
        return None
    others = [e for e in endpoints if e not in silent]
    went_silent_earlier = [e for e in others if e.healthy is False and (e.answered_at or since) < since]
    known = [e for e in others if e.healthy and e.polled_at is not None and e.polled_at >= since]
    busy = sum(e.active_jobs or 0 for e in known)
    joined = Dispatch.objects.filter(
        agent_name=agent_name, status=Dispatch.Status.AGENT_JOINED, room__status=Room.Status.ACTIVE
    ).count()
    jobs = sum(e.active_jobs or 0 for e in silent)
    holds = len(known) + len(went_silent_earlier) == len(others) and busy == 0 and joined <= jobs
    latest = max(silent, key=lambda e: e.answered_at or since)
    return WorkerSilence(
        agent_name=agent_name,
        url=safe_host(latest.url),
        last_answer_at=latest.answered_at or since,
        jobs=jobs,
        error=latest.last_error,
        holds=holds,
    )
