"""What the doctor knows about a room: its verdict types, and the facts read from LiveKit
and the ledger before any link is judged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from agents_app.models import Agent
from agents_app.selectors import EVERYTHING, Scope
from livekit_boundary.client import (
    LiveKit,
    LiveKitError,
    LiveKitNotFound,
    LiveKitUnavailable,
    LkDispatch,
    LkParticipant,
    LkRoom,
    livekit_run,
)
from rooms_app.models import AgentSeen, Dispatch, Room, TokenFact, WorkerHeartbeat
from rooms_app.services import HEARTBEAT_FRESH

OK, BROKEN, UNKNOWN = "ok", "broken", "unknown"
HEALTHY, WAITING, BROKEN_STATUS, LIVEKIT_UNAVAILABLE = "healthy", "waiting", "broken", "livekit_unavailable"
EXIT_CODES = {HEALTHY: 0, WAITING: 0, BROKEN_STATUS: 1, LIVEKIT_UNAVAILABLE: 2}

LINK_TITLES = (
    ("livekit", "LiveKit reachable, credentials accepted"),
    ("rules", "Rules give the room its agents, agents enabled"),
    ("token", "Token path: a token from the portal carried the agent, and LiveKit could honour it"),
    ("dispatch", "Dispatch present in LiveKit"),
    ("job", "Job created: a worker took the dispatch"),
    ("job_outcome", "Job did not fail or end"),
    ("agent", "Agent participant present"),
    ("crowd", "No duplicate or unmanaged agents"),
)

DEFAULT_DEADLINE_S = 15
MAX_JOINS = 10  # sample participants whose rules are evaluated
MAX_SCANNED_ROOMS = 20  # other rooms looked at for agent names seen joining
SEEN_WINDOW = timedelta(days=1)
TOKEN_SLACK = timedelta(seconds=60)  # a token is minted shortly before the room it creates
TOKEN_WINDOW = timedelta(hours=6)  # the longest token TTL: older tokens cannot join any more
MAX_TOKEN_FACTS = 200


@dataclass(slots=True)
class Link:
    number: int
    key: str
    title: str
    state: str = UNKNOWN
    summary: str = ""
    details: list[str] = field(default_factory=list)
    cause: str = ""
    fix: str = ""

    def set(self, state: str, summary: str, *, cause: str = "", fix: str = "") -> None:
        self.state, self.summary, self.cause, self.fix = state, summary, cause, fix


@dataclass(slots=True)
class Diagnosis:
    room_name: str
    agent: str | None
    identity: str | None
    checked_at: datetime
    livekit_url: str
    room_live: bool
    expected_agents: list[str]
    links: list[Link]

    @property
    def first_broken(self) -> Link | None:
        return next((link for link in self.links if link.state == BROKEN), None)

    @property
    def status(self) -> str:
        broken = self.first_broken
        if broken is None:
            return HEALTHY if all(link.state == OK for link in self.links) else WAITING
        return LIVEKIT_UNAVAILABLE if broken.key == "livekit" else BROKEN_STATUS

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def summary(self) -> str:
        broken = self.first_broken
        if broken is not None:
            return f"Broken at link {broken.number} ({broken.title}): {broken.summary}."
        if self.status == HEALTHY:
            names = ", ".join(agent_name_quoted(a) for a in self.expected_agents) or "no agent"
            return f"Healthy: {names} in room '{self.room_name}' as expected."
        waiting = next(link for link in self.links if link.state == UNKNOWN)
        return f"Nothing broken yet; not known at link {waiting.number} ({waiting.title}): {waiting.summary}."

    def as_dict(self) -> dict[str, Any]:
        broken = self.first_broken
        return {
            "room_name": self.room_name,
            "agent": self.agent,
            "identity": self.identity,
            "checked_at": self.checked_at.isoformat(),
            "livekit_url": self.livekit_url,
            "room_live": self.room_live,
            "status": self.status,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "first_broken_link": broken.number if broken else None,
            "cause": broken.cause if broken else "",
            "fix": broken.fix if broken else "",
            "expected_agents": list(self.expected_agents),
            "links": [
                {
                    "number": link.number,
                    "key": link.key,
                    "title": link.title,
                    "state": link.state,
                    "summary": link.summary,
                    "details": list(link.details),
                    "cause": link.cause,
                    "fix": link.fix,
                }
                for link in self.links
            ],
        }


# --- facts ----------------------------------------------------------------------------------


@dataclass(slots=True)
class LiveKitFacts:
    error: LiveKitError | None = None
    # LiveKit listed the room (ListRooms reads the cluster's shared store) but a call routed
    # to the node hosting it (ListDispatch; ListParticipants too when LiveKit is set to route
    # it) could not get through: in a multi-node cluster, that node is down. `error` is then
    # that call's error.
    room_node_silent: bool = False
    room: LkRoom | None = None
    participants: list[LkParticipant] = field(default_factory=list)
    dispatches: list[LkDispatch] = field(default_factory=list)

    @property
    def agents(self) -> list[LkParticipant]:
        return [p for p in self.participants if p.is_agent]


def _livekit_facts(room_name: str) -> LiveKitFacts:
    async def ask(lk: LiveKit) -> LiveKitFacts:
        rooms = await lk.list_rooms([room_name])
        room = next((r for r in rooms if r.name == room_name), None)
        if room is None:
            return LiveKitFacts()
        participants, dispatches = await asyncio.gather(
            lk.list_participants(room_name), _dispatches_or_none(lk, room_name), return_exceptions=True
        )
        for answer in (participants, dispatches):
            # ListRooms answered and lists the room: a call routed to its node that cannot
            # get through means that node, not LiveKit, is gone.
            if isinstance(answer, LiveKitUnavailable):
                return LiveKitFacts(error=answer, room=room, room_node_silent=True)
        for answer in (participants, dispatches):
            if isinstance(answer, BaseException):
                raise answer
        assert isinstance(participants, list) and isinstance(dispatches, list)
        return LiveKitFacts(room=room, participants=participants, dispatches=dispatches)

    try:
        return livekit_run(ask)
    except LiveKitError as exc:
        return LiveKitFacts(error=exc)


async def _dispatches_or_none(lk: LiveKit, room_name: str) -> list[LkDispatch]:
    try:
        return await lk.list_dispatches(room_name)
    except LiveKitNotFound:  # the room closed between the two calls
        return []


def agent_names_seen_in_livekit(exclude_room: str, scope: Scope = EVERYTHING) -> dict[str, str]:
    """Agent names of agents in a sample of the most recent other live rooms the caller may
    see: the names workers on this LiveKit really register with. Name -> a room it was
    seen in."""

    async def ask(lk: LiveKit) -> dict[str, str]:
        rooms = [
            r
            for r in await lk.list_rooms()
            if r.name != exclude_room and r.num_participants and scope.room_allowed(r.name)
        ]
        rooms.sort(key=lambda r: r.created_at.timestamp() if r.created_at else 0, reverse=True)
        rooms = rooms[:MAX_SCANNED_ROOMS]
        answers = await asyncio.gather(*(lk.list_participants(r.name) for r in rooms), return_exceptions=True)
        seen: dict[str, str] = {}
        for room, answer in zip(rooms, answers, strict=True):
            if isinstance(answer, BaseException):
                continue
            for p in answer:
                if p.is_agent:
                    seen.setdefault(p.agent_name or "", room.name)
        return seen

    try:
        return livekit_run(ask)
    except LiveKitError:
        return {}


@dataclass(slots=True)
class Facts:
    room_name: str
    now: datetime
    lk: LiveKitFacts
    ledger_room: Room | None
    ledger: list[Dispatch]  # newest first
    agents: dict[str, Agent]  # configured, by name
    token_facts: list[TokenFact] = field(default_factory=list)  # newest first
    heartbeat: WorkerHeartbeat | None = None  # the freshest Celery worker heartbeat
    scope: Scope = EVERYTHING  # whose question: every fact above is already within it
    visible_agents: frozenset[str] | None = None  # agent names the caller may see (None: all)
    livekit_url: str = ""  # the LiveKit address the caller may be told

    @property
    def livekit_key_named(self) -> str:
        """The portal's LiveKit API key as the caller may be told of it."""
        return (
            f"the API key '{settings.LIVEKIT_API_KEY}'" if self.scope.everything else "the portal's API key"
        )

    def sighting_visible(self, agent_name: str, room_name: str) -> bool:
        """A client sees sightings in its own rooms, and of its agents where no room is named."""
        if self.scope.everything:
            return True
        if room_name:
            return self.scope.room_allowed(room_name)
        return self.visible_agents is not None and agent_name in self.visible_agents

    @property
    def worker_alive(self) -> bool:
        return self.heartbeat is not None and self.heartbeat.beat_at >= self.now - HEARTBEAT_FRESH

    def tokens_carrying(self, agent_name: str) -> list[tuple[TokenFact, dict[str, Any]]]:
        """Token facts that carried the agent, newest first, with how each carried it."""
        found = []
        for fact in self.token_facts:
            for item in fact.agents if isinstance(fact.agents, list) else ():
                if isinstance(item, dict) and item.get("agent_name") == agent_name:
                    found.append((fact, item))
                    break
        return found

    @property
    def reachable(self) -> bool:
        return self.lk.error is None

    @property
    def live(self) -> bool:
        return self.reachable and self.lk.room is not None

    def ledger_for(self, agent_name: str) -> list[Dispatch]:
        return [d for d in self.ledger if d.agent_name == agent_name]

    def lk_dispatches_for(self, agent_name: str) -> list[LkDispatch]:
        found = [d for d in self.lk.dispatches if d.agent_name == agent_name]
        return sorted(found, key=lambda d: d.created_at.timestamp() if d.created_at else 0)

    def agents_named(self, agent_name: str) -> list[LkParticipant]:
        return [p for p in self.lk.agents if p.agent_name == agent_name]

    def within_deadline(self, agent_name: str) -> bool:
        """The agent's latest LiveKit dispatch is younger than its join deadline."""
        dispatches = self.lk_dispatches_for(agent_name)
        created = dispatches[-1].created_at if dispatches else None
        return created is not None and (self.now - created).total_seconds() < self.deadline_s(agent_name)

    def deadline_s(self, agent_name: str) -> int:
        agent = self.agents.get(agent_name)
        return agent.join_deadline_s if agent else DEFAULT_DEADLINE_S


def facts_gather(room_name: str, now: datetime, scope: Scope = EVERYTHING) -> Facts:
    """Everything the doctor judges, gathered within the caller's `scope` (the room itself
    is the caller's to ask about: its ledger, tokens and participants are all read)."""
    lk = _livekit_facts(room_name)
    ledger_room = Room.objects.filter(name=room_name).first()
    ledger: list[Dispatch] = []
    in_room: set[str] = {p.agent_name or "" for p in lk.agents} | {d.agent_name for d in lk.dispatches}
    if ledger_room is not None:
        ledger = list(Dispatch.objects.filter(room=ledger_room).order_by("-id")[:200])
        in_room |= {d.agent_name for d in ledger}
        if lk.room is not None and lk.room.created_at is not None:
            # A reused room name: only this session's history speaks about what is there now.
            since = lk.room.created_at - TOKEN_SLACK
            current = [d for d in ledger if d.created_at >= since or d.is_live]
            ledger = current
    token_facts = list(
        TokenFact.objects.filter(room_name=room_name, minted_at__gte=now - TOKEN_WINDOW).order_by("-id")[
            :MAX_TOKEN_FACTS
        ]
    )
    for fact in token_facts:
        carried = fact.agents if isinstance(fact.agents, list) else []
        in_room |= {a.get("agent_name", "") for a in carried if isinstance(a, dict)}
    visible = scope.agents_visible(room_name=room_name)
    if visible is not None:
        visible = visible | in_room
    agents = {a.agent_name: a for a in Agent.objects.all() if visible is None or a.agent_name in visible}
    heartbeat = WorkerHeartbeat.objects.order_by("-beat_at").first()
    livekit_url = settings.LIVEKIT_URL if scope.everything else settings.PUBLIC_LIVEKIT_URL
    if lk.error is not None and not scope.everything:
        # LiveKit's errors name the portal's internal address; a client is told the public one.
        lk.error.message = lk.error.message.replace(settings.LIVEKIT_URL, livekit_url)
    return Facts(
        room_name, now, lk, ledger_room, ledger, agents, token_facts, heartbeat, scope, visible, livekit_url
    )


def agent_names_seen(facts: Facts) -> dict[str, str]:
    """Agent names seen recently, within the caller's scope, from every place the portal
    learns them: agents in this room and in other live rooms, names recorded from webhooks,
    reconcile and ListDispatch jobs, and the ledger's joined dispatches. Name -> where."""
    seen: dict[str, str] = {}
    for p in facts.lk.agents:
        seen.setdefault(p.agent_name or "", facts.room_name)
    for name, room in agent_names_seen_recorded(facts.now - SEEN_WINDOW, facts).items():
        seen.setdefault(name, room)
    for name, room in agent_names_seen_in_livekit(facts.room_name, facts.scope).items():
        seen.setdefault(name, room)
    recent = (  # created_at is indexed; an agent joins within seconds of its dispatch
        Dispatch.objects.filter(created_at__gte=facts.now - SEEN_WINDOW, joined_at__isnull=False)
        .values_list("agent_name", "room__name")
        .order_by("-created_at")[:500]
    )
    for name, room in recent:
        if facts.sighting_visible(name, room):
            seen.setdefault(name, room)
    return seen


def agent_names_seen_recorded(since: datetime, facts: Facts | None = None) -> dict[str, str]:
    """Agent names the portal recorded seeing (agents joining, jobs in ListDispatch, the
    worker's own identity attribute), within `facts`' scope when given. Name -> where."""
    rows = AgentSeen.objects.filter(last_seen_at__gte=since).order_by("-last_seen_at")[:500]
    return {
        seen.agent_name: seen.room_name or seen.how
        for seen in rows
        if facts is None or facts.sighting_visible(seen.agent_name, seen.room_name)
    }


def agent_name_quoted(agent_name: str) -> str:
    return f"'{agent_name}'" if agent_name else "the unnamed agent"


def agent_names_quoted(names: Iterable[str]) -> str:
    return ", ".join(agent_name_quoted(n) for n in names)
