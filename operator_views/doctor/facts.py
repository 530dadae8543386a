"""What the doctor knows about a room: one snapshot of the facts read from LiveKit and the
ledger, taken before any link is judged. `facts_gather` is the doctor's only reader: the
verdicts (verdicts.py) and the words (wording.py) take the snapshot and read nothing else."""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q

from agents_app.models import Agent
from agents_app.rules import Join
from agents_app.selectors import EVERYTHING, Scope
from agents_app.services import Explanation, rules_explain
from livekit_boundary.client import (
    LiveKit,
    LiveKitAuthRejected,
    LiveKitError,
    LiveKitNotFound,
    LiveKitUnavailable,
    LkDispatch,
    LkParticipant,
    LkRoom,
    livekit_run,
)
from rooms_app.models import AgentSeen, Dispatch, Room, TokenFact, WorkerHeartbeat
from rooms_app.services import HEARTBEAT_FRESH, WORKER_STOPPED
from watch_app.models import Incident
from watch_app.selectors import Presence, WorkerSilence, agent_worker_silence, agents_presence

DEFAULT_DEADLINE_S = 15
MAX_JOINS = 10  # sample participants whose rules are evaluated
MAX_SCANNED_ROOMS = 20  # other rooms looked at for agent names seen joining
SEEN_WINDOW = timedelta(days=1)
TOKEN_SLACK = timedelta(seconds=60)  # a token is minted shortly before the room it creates
TOKEN_WINDOW = timedelta(hours=6)  # the longest token TTL: older tokens cannot join any more
MAX_TOKEN_FACTS = 200


# --- the snapshot ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveKitFacts:
    """What LiveKit answered: the error, or the room (None: not live) and what is in it."""

    error: LiveKitError | None = None
    error_message: str = ""  # the error's words as the caller may read them
    # LiveKit listed the room (ListRooms reads the cluster's shared store) but a call routed
    # to the node hosting it (ListDispatch; ListParticipants too when LiveKit routes it) could
    # not get through: in a multi-node cluster, that node is down. `error` is that call's.
    room_node_silent: bool = False
    room: LkRoom | None = None
    participants: tuple[LkParticipant, ...] = ()
    dispatches: tuple[LkDispatch, ...] = ()

    @property
    def auth_rejected(self) -> bool:
        return isinstance(self.error, LiveKitAuthRejected)

    @property
    def agents(self) -> list[LkParticipant]:
        return [p for p in self.participants if p.is_agent]

    @property
    def people(self) -> list[LkParticipant]:
        return [p for p in self.participants if not p.is_agent]


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """An agent as configured in the portal."""

    agent_name: str
    enabled: bool = True
    join_deadline_s: int = DEFAULT_DEADLINE_S
    max_attempts: int = 1


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """The ledger's room."""

    status: str  # Room.Status
    started_at: datetime | None = None
    finished_at: datetime | None = None
    existed_before_token: bool | None = None  # LiveKit had the room when the first token was minted


@dataclass(frozen=True, slots=True)
class Removed:
    """An agent participant the portal removed (a duplicate)."""

    identity: str
    why: str


@dataclass(frozen=True, slots=True)
class DispatchRecord:
    """One of the ledger's dispatches (an attempt) of an agent to the room."""

    pk: int
    agent_name: str
    status: str  # Dispatch.Status
    created_at: datetime
    source: str = "api"  # Dispatch.Source
    delivery: str = "explicit"  # Dispatch.Delivery
    rule_name: str = ""
    trigger: str = ""  # the identity whose join or token asked for it
    attempt: int = 1
    previous_id: int | None = None
    livekit_dispatch_id: str = ""
    livekit_job_id: str = ""
    participant_identity: str = ""  # the agent's
    last_error: str = ""
    agents_removed: tuple[Removed, ...] = ()
    deadline_at: datetime | None = None
    requested_at: datetime | None = None
    joined_at: datetime | None = None
    left_at: datetime | None = None
    ended_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def status_label(self) -> str:
        return str(Dispatch.Status(self.status).label)

    @property
    def source_label(self) -> str:
        return str(Dispatch.Source(self.source).label)

    @property
    def worker_stopped(self) -> bool:
        return self.status == Dispatch.Status.FAILED and self.last_error.startswith(WORKER_STOPPED)

    @classmethod
    def of(cls, d: Dispatch) -> DispatchRecord:
        removed = tuple(
            Removed(str(item.get("identity", "")), str(item.get("why", "")))
            for item in (d.agents_removed or [])
            if isinstance(item, dict)
        )
        return cls(
            pk=d.pk,
            agent_name=d.agent_name,
            status=d.status,
            created_at=d.created_at,
            source=d.source,
            delivery=d.delivery,
            rule_name=d.rule_name,
            trigger=d.participant_identity_trigger,
            attempt=d.attempt,
            previous_id=d.previous_id,
            livekit_dispatch_id=d.livekit_dispatch_id,
            livekit_job_id=d.livekit_job_id,
            participant_identity=d.participant_identity,
            last_error=d.last_error,
            agents_removed=removed,
            deadline_at=d.deadline_at,
            requested_at=d.requested_at,
            joined_at=d.joined_at,
            left_at=d.left_at,
            ended_at=d.ended_at,
            updated_at=d.updated_at,
        )


LIVE_STATUSES = frozenset(
    {
        Dispatch.Status.PENDING,
        Dispatch.Status.REQUESTED,
        Dispatch.Status.JOB_ASSIGNED,
        Dispatch.Status.AGENT_JOINED,
    }
)


@dataclass(frozen=True, slots=True)
class CarriedAgent:
    agent_name: str
    delivery: str  # token | explicit (the room was known to exist when it was minted)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token the portal minted for the room, with the agents it carried."""

    minted_at: datetime
    participant_identity: str
    agents: tuple[CarriedAgent, ...] = ()

    def carried(self, agent_name: str) -> CarriedAgent | None:
        return next((a for a in self.agents if a.agent_name == agent_name), None)


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    key: str
    opened_at: datetime
    kind: str
    subject: str
    room_name: str


@dataclass(frozen=True, slots=True)
class RulesRead:
    """The rules evaluated for one join (someone in the room, or a token's holder)."""

    join: Join
    explanation: Explanation


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every fact the doctor judges, within the caller's scope."""

    room_name: str
    now: datetime
    lk: LiveKitFacts
    livekit_url: str = ""  # the LiveKit address the caller may be told
    staff: bool = True  # the caller sees everything (the admin), not one client's share
    api_key: str = ""  # the portal's LiveKit API key, for staff only
    room: RoomRecord | None = None
    ledger: tuple[DispatchRecord, ...] = ()  # newest first, this room session only
    agents: dict[str, AgentConfig] = field(default_factory=dict)  # configured, by name
    tokens: tuple[TokenRecord, ...] = ()  # newest first
    heartbeat_at: datetime | None = None  # the freshest Celery worker heartbeat
    rules: tuple[RulesRead, ...] = ()
    silences: dict[int, WorkerSilence] = field(default_factory=dict)  # dispatch pk -> its worker's
    incidents: tuple[IncidentRecord, ...] = ()  # open, about this room or its agents
    # Agent names seen recently (name -> a room or how), and worker health, for the agents
    # that may lack a worker; None when every one had a job (not read).
    names_seen: dict[str, str] | None = None
    presence: dict[str, Presence] = field(default_factory=dict)

    @property
    def reachable(self) -> bool:
        return self.lk.error is None

    @property
    def live(self) -> bool:
        return self.reachable and self.lk.room is not None

    @property
    def worker_alive(self) -> bool:
        return self.heartbeat_at is not None and self.heartbeat_at >= self.now - HEARTBEAT_FRESH

    def tokens_carrying(self, agent_name: str) -> list[tuple[TokenRecord, CarriedAgent]]:
        """Tokens that carried the agent, newest first, with how each carried it."""
        found = []
        for token in self.tokens:
            item = token.carried(agent_name)
            if item is not None:
                found.append((token, item))
        return found

    def ledger_for(self, agent_name: str) -> list[DispatchRecord]:
        return [d for d in self.ledger if d.agent_name == agent_name]

    def lk_dispatches_for(self, agent_name: str) -> list[LkDispatch]:
        found = [d for d in self.lk.dispatches if d.agent_name == agent_name]
        return sorted(found, key=lambda d: d.created_at.timestamp() if d.created_at else 0)

    def agents_named(self, agent_name: str) -> list[LkParticipant]:
        return [p for p in self.lk.agents if p.agent_name == agent_name]

    def deadline_s(self, agent_name: str) -> int:
        agent = self.agents.get(agent_name)
        return agent.join_deadline_s if agent else DEFAULT_DEADLINE_S

    def within_deadline(self, agent_name: str) -> bool:
        """The agent's latest LiveKit dispatch is younger than its join deadline."""
        dispatches = self.lk_dispatches_for(agent_name)
        created = dispatches[-1].created_at if dispatches else None
        return created is not None and (self.now - created).total_seconds() < self.deadline_s(agent_name)

    def incidents_about(self, agent_name: str) -> list[IncidentRecord]:
        return [
            i
            for i in self.incidents
            if (i.kind == "dispatch_gave_up" and i.subject == agent_name) or i.room_name == self.room_name
        ][:5]


# --- gathering ------------------------------------------------------------------------------


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
            if isinstance(answer, LiveKitUnavailable):  # the room's node, not LiveKit, is gone
                return LiveKitFacts(
                    error=answer, error_message=answer.message, room=room, room_node_silent=True
                )
        for answer in (participants, dispatches):
            if isinstance(answer, BaseException):
                raise answer
        assert isinstance(participants, list) and isinstance(dispatches, list)
        return LiveKitFacts(room=room, participants=tuple(participants), dispatches=tuple(dispatches))

    try:
        return livekit_run(ask)
    except LiveKitError as exc:
        return LiveKitFacts(error=exc, error_message=exc.message)


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


@dataclass(frozen=True, slots=True)
class Sightings:
    """Who may see a sighting: a client sees those in its own rooms, and of its agents where
    no room is named."""

    scope: Scope
    visible_agents: frozenset[str] | None

    def visible(self, agent_name: str, room_name: str) -> bool:
        if self.scope.everything:
            return True
        if room_name:
            return self.scope.room_allowed(room_name)
        return self.visible_agents is not None and agent_name in self.visible_agents


def agent_names_seen(
    *, room_name: str, now: datetime, lk: LiveKitFacts, sightings: Sightings | None = None
) -> dict[str, str]:
    """Agent names seen recently, within the caller's scope, from every place the portal
    learns them: agents in this room and in other live rooms, names recorded from webhooks,
    reconcile and ListDispatch jobs, and the ledger's joined dispatches. Name -> where."""
    sightings = sightings or Sightings(EVERYTHING, None)
    seen: dict[str, str] = {}
    for p in lk.agents:
        seen.setdefault(p.agent_name or "", room_name)
    for name, where in agent_names_seen_recorded(now - SEEN_WINDOW, sightings).items():
        seen.setdefault(name, where)
    for name, where in agent_names_seen_in_livekit(room_name, sightings.scope).items():
        seen.setdefault(name, where)
    recent = (  # created_at is indexed; an agent joins within seconds of its dispatch
        Dispatch.objects.filter(created_at__gte=now - SEEN_WINDOW, joined_at__isnull=False)
        .values_list("agent_name", "room__name")
        .order_by("-created_at")[:500]
    )
    for name, room in recent:
        if sightings.visible(name, room):
            seen.setdefault(name, room)
    return seen


def agent_names_seen_recorded(since: datetime, sightings: Sightings | None = None) -> dict[str, str]:
    """Agent names the portal recorded seeing (agents joining, jobs in ListDispatch, the
    worker's own identity attribute), within the sightings' scope when given. Name -> where."""
    rows = AgentSeen.objects.filter(last_seen_at__gte=since).order_by("-last_seen_at")[:500]
    return {
        seen.agent_name: seen.room_name or seen.how
        for seen in rows
        if sightings is None or sightings.visible(seen.agent_name, seen.room_name)
    }


def _ledger(room: Room | None, lk: LiveKitFacts) -> list[DispatchRecord]:
    if room is None:
        return []
    rows = [DispatchRecord.of(d) for d in Dispatch.objects.filter(room=room).order_by("-id")[:200]]
    if lk.room is not None and lk.room.created_at is not None:
        # A reused room name: only this session's history speaks about what is there now.
        since = lk.room.created_at - TOKEN_SLACK
        rows = [d for d in rows if d.created_at >= since or d.is_live]
    return rows


def _tokens(room_name: str, now: datetime) -> list[TokenRecord]:
    facts = TokenFact.objects.filter(room_name=room_name, minted_at__gte=now - TOKEN_WINDOW).order_by("-id")[
        :MAX_TOKEN_FACTS
    ]
    tokens = []
    for fact in facts:
        carried = tuple(
            CarriedAgent(str(a.get("agent_name", "")), str(a.get("delivery", "token")))
            for a in (fact.agents if isinstance(fact.agents, list) else [])
            if isinstance(a, dict)
        )
        tokens.append(TokenRecord(fact.minted_at, fact.participant_identity, carried))
    return tokens


def _joins(
    room_name: str, lk: LiveKitFacts, ledger: list[DispatchRecord], identity: str | None
) -> list[Join]:
    """Who to evaluate the rules for: the given identity, else the people in the room and
    those the portal minted tokens for (each with the attributes LiveKit reports)."""
    present = {p.identity: p for p in lk.people}
    if identity is not None:
        found = present.get(identity)
        return [Join(room_name, identity, attributes=dict(found.attributes) if found else {})]
    joins = [Join(room_name, p.identity, attributes=dict(p.attributes)) for p in present.values()]
    named = set(present)
    for d in ledger:
        if d.trigger and d.trigger not in named and len(joins) < MAX_JOINS:
            joins.append(Join(room_name, d.trigger))
            named.add(d.trigger)
    return joins[:MAX_JOINS] or [Join(room_name, "")]


def _silences(ledger: list[DispatchRecord], listed: set[str], now: datetime) -> dict[int, WorkerSilence]:
    """The worker poll's word on the agents LiveKit still lists (or whose worker stopped)."""
    found: dict[int, WorkerSilence] = {}
    for d in ledger:
        listed_joined = d.participant_identity in listed and d.status == Dispatch.Status.AGENT_JOINED
        if (d.participant_identity and listed_joined) or d.worker_stopped:
            silence = agent_worker_silence(agent_name=d.agent_name, joined_at=d.joined_at, now=now)
            if silence is not None:
                found[d.pk] = silence
    return found


def _incidents(room_name: str, agent_names: set[str]) -> list[IncidentRecord]:
    rows = (
        Incident.objects.filter(status=Incident.Status.OPEN)
        .filter(Q(kind="dispatch_gave_up", subject__in=sorted(agent_names)) | Q(detail__room=room_name))
        .order_by("opened_at")[:20]
    )
    return [
        IncidentRecord(
            i.key,
            i.opened_at,
            i.kind,
            i.subject,
            str(i.detail.get("room", "")) if isinstance(i.detail, dict) else "",
        )
        for i in rows
    ]


def facts_gather(
    room_name: str, now: datetime, scope: Scope = EVERYTHING, *, identity: str | None = None
) -> Snapshot:
    """Everything the doctor judges, gathered within the caller's `scope` (the room itself
    is the caller's to ask about: its ledger, tokens and participants are all read).
    `identity`: evaluate the rules for that participant only."""
    lk = _livekit_facts(room_name)
    room_row = Room.objects.filter(name=room_name).first()
    ledger = _ledger(room_row, lk)
    tokens = _tokens(room_name, now)
    in_room = {p.agent_name or "" for p in lk.agents} | {d.agent_name for d in lk.dispatches}
    in_room |= {d.agent_name for d in ledger} | {a.agent_name for t in tokens for a in t.agents}
    visible = scope.agents_visible(room_name=room_name)
    if visible is not None:
        visible = visible | in_room
    agents = {
        a.agent_name: AgentConfig(a.agent_name, a.enabled, a.join_deadline_s, a.max_attempts)
        for a in Agent.objects.all()
        if visible is None or a.agent_name in visible
    }
    rules = tuple(
        RulesRead(join, rules_explain(join=join, scope=scope))
        for join in _joins(room_name, lk, ledger, identity)
    )
    heartbeat = WorkerHeartbeat.objects.order_by("-beat_at").first()
    livekit_url = settings.LIVEKIT_URL if scope.everything else settings.PUBLIC_LIVEKIT_URL
    if lk.error is not None and not scope.everything:
        # LiveKit's errors name the portal's internal address; a client is told the public one.
        lk = LiveKitFacts(
            error=lk.error, error_message=lk.error_message.replace(settings.LIVEKIT_URL, livekit_url)
        )
    candidates = {a.agent_name for r in rules for a in r.explanation.agents} | {d.agent_name for d in ledger}
    jobless = {name for name in candidates if not any(d.jobs for d in lk.dispatches if d.agent_name == name)}
    names_seen = None
    presence: dict[str, Presence] = {}
    if lk.error is None and jobless:
        sightings = Sightings(scope, visible)
        names_seen = agent_names_seen(room_name=room_name, now=now, lk=lk, sightings=sightings)
        presence = agents_presence(agent_names=sorted(jobless), now=now)
    return Snapshot(
        room_name=room_name,
        now=now,
        lk=lk,
        livekit_url=livekit_url,
        staff=scope.everything,
        api_key=settings.LIVEKIT_API_KEY if scope.everything else "",
        room=(
            RoomRecord(
                room_row.status, room_row.started_at, room_row.finished_at, room_row.existed_before_token
            )
            if room_row is not None
            else None
        ),
        ledger=tuple(ledger),
        agents=agents,
        tokens=tuple(tokens),
        heartbeat_at=heartbeat.beat_at if heartbeat is not None else None,
        rules=rules,
        silences=_silences(ledger, {p.identity for p in lk.agents}, now),
        incidents=tuple(_incidents(room_name, candidates)),
        names_seen=names_seen,
        presence=presence,
    )


def agent_names_near(agent_name: str, names: Iterable[str]) -> list[str]:
    """Names close to `agent_name` (a typo apart), closest first, never the name itself."""
    return [
        n
        for n in difflib.get_close_matches(agent_name, [n for n in names if n], n=3, cutoff=0.75)
        if n != agent_name
    ]
