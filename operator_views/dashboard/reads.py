"""The dashboard's reads of the ledger: per-agent success rate and time to join over the last
hour and day, dispatches per hour by outcome, live rooms missing an expected agent, the last
failures.

Time to join (`JOIN_MEASURE`) counts from when LiveKit had the request (CreateDispatch answered
for an explicit dispatch; the room's start for an agent carried in a token, as LiveKit
dispatches it then: the wait for the first participant to connect is not the agent's) to the
agent participant's join time as LiveKit reports it. The canaries measure differently (from
sending CreateDispatch to the agent seen active, polled), so their figures are labelled apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from dispatchportal.stats import percentile
from rooms_app.models import WAITING_STATUSES, Dispatch, Room
from rooms_app.selectors import rooms_wanted_agents

FAILED_STATUSES = ("no_worker", "failed", "timed_out")
JOIN_MEASURE = (
    "from LiveKit having the request (CreateDispatch answered, or the room started for an agent "
    "in a token) to the agent's join time as LiveKit reports it"
)
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
        "agent_name", "status", "delivery", "created_at", "requested_at", "joined_at", "room__started_at"
    )
    rows = []
    for agent_name, status, delivery, created, requested, joined, room_started in values:
        if delivery == Dispatch.Delivery.TOKEN and room_started is not None:
            # LiveKit dispatches a token's agent as the room starts; the portal may have seen
            # that dispatch (requested_at) only later, even after the join.
            start = max(created, room_started)
        else:
            start = requested or (max(created, room_started) if room_started else created)
        rows.append(_Row(agent_name, status, created, start, joined))
    return rows


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
class MissingAgent:
    """A live room without one of the agents the ledger wants there: still on its way
    (waiting) or given up on (ended)."""

    room_name: str
    room_id: int
    agent_name: str
    status: str
    status_label: str
    dispatch_id: int
    attempt: int
    waiting_s: float
    overdue: bool
    ended: bool
    last_error: str


def rooms_missing_agents(*, now: datetime | None = None, limit: int = 500) -> list[MissingAgent]:
    """Live rooms (the `limit` latest started) whose expected agents (`rooms_wanted_agents`,
    the ledger's own answer, as the API's room state gives it) are not all present: given-up
    ones first, then the longest waits."""
    now = now or timezone.now()
    rooms = list(Room.objects.filter(status=Room.Status.ACTIVE).order_by("-started_at", "-id")[:limit])
    answer = []
    wanted_by_room = rooms_wanted_agents(rooms=rooms)
    for room in rooms:
        for wanted in wanted_by_room[room.pk]:
            if wanted.joined:
                continue
            ended = wanted.status not in WAITING_STATUSES
            start = wanted.asked_at or room.started_at or now
            if room.started_at and wanted.status == Dispatch.Status.PENDING:
                start = max(start, room.started_at)  # a token's agent waits from the room's start
            answer.append(
                MissingAgent(
                    room_name=room.name,
                    room_id=room.pk,
                    agent_name=wanted.agent_name,
                    status=wanted.status,
                    status_label=Dispatch.Status(wanted.status).label,
                    dispatch_id=wanted.dispatch_id,
                    attempt=wanted.attempt,
                    waiting_s=max(0.0, (now - start).total_seconds()),
                    overdue=ended or bool(wanted.deadline_at and wanted.deadline_at < now),
                    ended=ended,
                    last_error=wanted.last_error,
                )
            )
    answer.sort(key=lambda m: (not m.ended, not m.overdue, -m.waiting_s))
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
