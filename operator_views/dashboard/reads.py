"""The dashboard's reads of the ledger: per-agent success rate and time to join over the last
hour and day, dispatches per hour by outcome, rooms waiting for an agent now, the last failures.

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

from django.utils import timezone

from rooms_app.models import WAITING_STATUSES, Dispatch, Room

FAILED_STATUSES = ("no_worker", "failed", "timed_out")
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


@dataclass(frozen=True, slots=True)
class AgentStats:
    agent_name: str
    dispatched: int
    joined: int
    failed: int
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


def hours_since_first_dispatch(buckets: Sequence[HourBucket], *, at_least: int = 6) -> list[HourBucket]:
    """The buckets from the first hour that saw a dispatch (and at least the last
    `at_least`), so a new install's chart is not mostly empty hours; [] when none saw any."""
    busy = [i for i, b in enumerate(buckets) if b.joined + b.failed + b.other]
    if not busy:
        return []
    return list(buckets[min(busy[0], max(0, len(buckets) - at_least)) :])
