"""Reads of the dispatch ledger: what the token path, the REST API and admin ask.

(The token path reads whether a room is live in the same statement that records its token:
`services.token_fact_intake`.)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.core.cache import cache
from django.db.models import Max, Q

from agents_app.rules import Join
from agents_app.selectors import EVERYTHING, Scope, config_get
from dispatchportal.exceptions import Forbidden, NotFound

from .models import Dispatch, Room, TokenFact, WebhookEvent


def dispatch_get(*, dispatch_id: int, scope: Scope) -> Dispatch:
    """One dispatch, if the caller may see it (a client: rooms in its patterns). Out of
    scope is reported as not found, in the same words, so ids of other clients' rooms do
    not leak."""
    dispatch = Dispatch.objects.select_related("room", "agent").filter(pk=dispatch_id).first()
    if dispatch is None or not scope.room_allowed(dispatch.room.name):
        raise NotFound(f"no dispatch {dispatch_id}")
    return dispatch


def dispatch_next_attempt(*, dispatch: Dispatch) -> Dispatch | None:
    """The attempt that replaced this one, if any (clients follow the chain)."""
    return Dispatch.objects.filter(previous=dispatch).order_by("id").first()


@dataclass(slots=True)
class WantedAgent:
    agent_name: str
    status: str
    dispatch_id: int
    attempt: int
    source: str
    participant_identity: str
    joined_at: datetime | None
    last_error: str
    waiting_for_livekit_since: datetime | None = None
    agents_removed: list[dict[str, str]] = field(default_factory=list)
    deadline_at: datetime | None = None
    asked_at: datetime | None = None  # requested, or created for a token's agent not yet seen

    @property
    def joined(self) -> bool:
        return self.status == Dispatch.Status.AGENT_JOINED


@dataclass(slots=True)
class RoomState:
    room_name: str
    status: str  # pending | active | finished | unknown
    sid: str = ""
    num_participants: int = 0
    agents: list[WantedAgent] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """All wanted agents joined (and at least one is wanted)."""
        return bool(self.agents) and all(a.joined for a in self.agents)


def room_state(*, room_name: str, scope: Scope = EVERYTHING) -> RoomState:
    """The agents the portal wants in a room and where each stands: the latest attempt per
    agent, leaving out cancelled ones and, in a live room, leftovers of an earlier session.
    A room outside the caller's scope is refused (403), whether the portal knows it or not."""
    if not scope.room_allowed(room_name):
        raise Forbidden(f"room '{room_name}' is outside this client's room patterns", field="room_name")
    room = Room.objects.filter(name=room_name).first()
    if room is None:
        return RoomState(room_name=room_name, status="unknown")
    agents = rooms_wanted_agents(rooms=[room])[room.pk]
    return RoomState(
        room_name=room.name,
        status=room.status,
        sid=room.sid,
        num_participants=room.num_participants,
        agents=agents,
    )


def rooms_wanted_agents(*, rooms: list[Room]) -> dict[int, list[WantedAgent]]:
    """Per room id, the agents the portal wants there and where each stands (what
    `room_state` reports, read for many rooms at once): the latest attempt per agent, leaving
    out replaced and cancelled ones and, in a live room, leftovers of an earlier session.
    Sorted by agent name. The rooms list, the dashboard and the API all read this."""
    by_room: dict[int, list[Dispatch]] = {room.pk: [] for room in rooms}
    for dispatch in Dispatch.objects.filter(room_id__in=list(by_room)).order_by("id"):
        by_room[dispatch.room_id].append(dispatch)
    return {room.pk: _wanted(room=room, dispatches=by_room[room.pk]) for room in rooms}


def _wanted(*, room: Room, dispatches: list[Dispatch]) -> list[WantedAgent]:
    latest: dict[str, Dispatch] = {}
    replaced: set[int] = set()
    removed: dict[str, list[dict[str, str]]] = {}
    for dispatch in dispatches:
        latest[dispatch.agent_name] = dispatch
        if dispatch.previous_id:
            replaced.add(dispatch.previous_id)
        if dispatch.agents_removed:
            removed.setdefault(dispatch.agent_name, []).extend(dispatch.agents_removed)
    agents = []
    for dispatch in latest.values():
        # An attempt handed over to its fallback agent is that agent's row now.
        if dispatch.pk in replaced or dispatch.status == Dispatch.Status.CANCELLED:
            continue
        if room.status != Room.Status.FINISHED and dispatch.status == Dispatch.Status.ROOM_CLOSED:
            continue
        agents.append(
            WantedAgent(
                agent_name=dispatch.agent_name,
                status=dispatch.status,
                dispatch_id=dispatch.pk,
                attempt=dispatch.attempt,
                source=dispatch.source,
                participant_identity=dispatch.participant_identity,
                joined_at=dispatch.joined_at,
                last_error=dispatch.last_error,
                waiting_for_livekit_since=dispatch.livekit_waiting_since,
                agents_removed=removed.get(dispatch.agent_name, []),
                deadline_at=dispatch.deadline_at,
                asked_at=dispatch.requested_at or dispatch.created_at,
            )
        )
    agents = _expectations_current(room_name=room.name, agents=agents, latest=latest)
    agents.sort(key=lambda a: a.agent_name)
    return agents


def _expectations_current(
    *, room_name: str, agents: list[WantedAgent], latest: dict[str, Dispatch]
) -> list[WantedAgent]:
    """Leave out an ended token or rule dispatch of an agent the rules no longer give that join
    (the rule was fixed, e.g. a typo in its agent name) once an agent they do give has joined:
    the room is ready with the right agent, not waiting for the old one."""
    joined = {a.agent_name for a in agents if a.joined}
    if not joined:
        return agents
    rules = config_get().rules
    kept = []
    for wanted in agents:
        row = latest[wanted.agent_name]
        if not row.is_live and row.source in (Dispatch.Source.TOKEN, Dispatch.Source.RULE):
            given = {
                a.agent_name for a in rules.evaluate(Join(room_name, row.participant_identity_trigger)).agents
            }
            if wanted.agent_name not in given and given & joined:
                continue
        kept.append(wanted)
    return kept


@dataclass(frozen=True, slots=True)
class LiveKitStatus:
    ok: bool
    problem: str = ""


_STATUS_KEY = "rooms:livekit-status"
_STATUS_TTL_S = 15


def livekit_status(*, timeout_s: float = 2.0) -> LiveKitStatus:
    """Can the portal reach LiveKit with its credentials? Asked with a short timeout and
    cached briefly, so admin pages showing it stay fast when LiveKit is down."""
    from livekit_boundary.client import LiveKitAuthRejected, LiveKitError, livekit_run

    with contextlib.suppress(Exception):
        cached = cache.get(_STATUS_KEY)
        if cached is not None:
            return LiveKitStatus(*cached)
    try:
        # A one-name ListRooms: cheap, and it needs a valid key and the roomList grant.
        livekit_run(lambda client: client.list_rooms(["__dispatch_portal_health__"]), timeout_s=timeout_s)
        status = LiveKitStatus(True)
    except LiveKitAuthRejected as exc:
        status = LiveKitStatus(
            False,
            f"LiveKit refuses the portal's credentials: {exc.message}. Check "
            "LIVEKIT_API_KEY and LIVEKIT_API_SECRET.",
        )
    except LiveKitError as exc:
        status = LiveKitStatus(False, f"LiveKit is unreachable: {exc.message}. Dispatches wait and retry.")
    with contextlib.suppress(Exception):
        cache.set(_STATUS_KEY, (status.ok, status.problem), _STATUS_TTL_S)
    return status


# --- what admin pages draw: a dispatch's life, and when each agent was last seen -------------


@dataclass(frozen=True, slots=True)
class TimelineStep:
    """One step of a dispatch's life. `state`: done, failed (the verdict), waiting (not yet)
    or skipped (not part of this delivery, e.g. no CreateDispatch for a token's agent)."""

    key: str
    label: str
    at: datetime | None
    state: str
    detail: str = ""
    since_previous_s: float | None = None


_TRIGGERS: dict[str, str] = {
    Dispatch.Source.TOKEN: "Token minted",
    Dispatch.Source.RULE: "Rule fired (room started)",
    Dispatch.Source.API: "Asked for through the API",
    Dispatch.Source.RECONCILE: "Found missing by reconcile",
    Dispatch.Source.FALLBACK: "Fallback for a failed agent",
}
_ENDED_WITHOUT_AGENT = ("no_worker", "failed", "timed_out", "cancelled", "room_closed")


def dispatch_timeline(*, dispatch: Dispatch) -> list[TimelineStep]:
    """The dispatch's life from the fields the API returns: the token or trigger, the
    dispatch requested, the job assigned, then the agent joined (and left) or the verdict;
    each dated step with the seconds since the dated step before it."""
    details: dict[str, str] = {
        Dispatch.Source.TOKEN: f"for {dispatch.participant_identity_trigger}"
        if dispatch.participant_identity_trigger
        else "",
        Dispatch.Source.RULE: f"rule '{dispatch.rule_name}'" if dispatch.rule_name else "",
        Dispatch.Source.API: f"by {dispatch.requested_by}" if dispatch.requested_by else "",
        Dispatch.Source.FALLBACK: f"replaces dispatch #{dispatch.previous_id}"
        if dispatch.previous_id
        else "",
    }
    trigger_detail = details.get(dispatch.source, "")
    in_token = dispatch.delivery == Dispatch.Delivery.TOKEN and dispatch.requested_at is None
    ended = dispatch.status in _ENDED_WITHOUT_AGENT
    requested_at, requested_note = _by_the_join(dispatch.requested_at, dispatch.joined_at)
    job_at, job_note = _by_the_join(dispatch.job_assigned_at, dispatch.joined_at)
    steps = [
        TimelineStep(
            "trigger",
            _TRIGGERS.get(dispatch.source, dispatch.source),
            _triggered_at(dispatch),
            "done",
            trigger_detail,
        ),
        TimelineStep(
            "requested",
            "Dispatch requested",
            requested_at,
            "done" if dispatch.requested_at else "skipped" if in_token else "waiting",
            "carried in the participant token; LiveKit dispatches it when the room starts"
            if in_token
            else " ".join(filter(None, (dispatch.livekit_dispatch_id, requested_note))),
        ),
        TimelineStep(
            "job_assigned",
            "Job assigned to a worker",
            job_at,
            "done" if dispatch.job_assigned_at else "waiting",
            " ".join(filter(None, (dispatch.livekit_job_id, job_note))),
        ),
    ]
    if dispatch.joined_at is not None:
        steps.append(
            TimelineStep("joined", "Agent joined", dispatch.joined_at, "done", dispatch.participant_identity)
        )
        if dispatch.left_at is not None:
            steps.append(TimelineStep("left", "Agent left", dispatch.left_at, "done", dispatch.last_error))
    elif ended:
        steps.append(
            TimelineStep(
                "verdict", dispatch.get_status_display(), dispatch.ended_at, "failed", dispatch.last_error
            )
        )
    else:
        deadline = f"join deadline {dispatch.deadline_at:%H:%M:%S} UTC" if dispatch.deadline_at else ""
        steps.append(TimelineStep("joined", "Agent joined", None, "waiting", deadline))
    if ended:  # steps never reached are not waiting any more
        steps = [s if s.state != "waiting" else replace(s, state="skipped") for s in steps]
    steps = _in_time_order(steps)
    answer, previous = [], None
    for step in steps:
        if step.at is not None:
            gap: float | None = (step.at - previous).total_seconds() if previous is not None else None
            step = replace(step, since_previous_s=gap)
            previous = step.at
        answer.append(step)
    return answer


def _triggered_at(dispatch: Dispatch) -> datetime:
    """When the agent was asked for: for a token's agent, when the token was minted (its fact
    is applied to the ledger a moment later, by then the agent may have joined); else when the
    row was created."""
    if dispatch.source != Dispatch.Source.TOKEN or not dispatch.participant_identity_trigger:
        return dispatch.created_at
    minted = (
        TokenFact.objects.filter(
            room_name=dispatch.room.name,
            participant_identity=dispatch.participant_identity_trigger,
            minted_at__lte=dispatch.created_at,
        )
        .order_by("-minted_at")
        .values_list("minted_at", flat=True)
        .first()
    )
    return minted or dispatch.created_at


def _by_the_join(at: datetime | None, joined_at: datetime | None) -> tuple[datetime | None, str]:
    """A step the portal learned of only after LiveKit's join time (older records of the
    token path) happened by the join at the latest: shown at the join, with when it was seen."""
    if at is None or joined_at is None or at <= joined_at:
        return at, ""
    seen = f"{at:%H:%M:%S}.{at.microsecond // 1000:03d}"
    return joined_at, f"(seen by the portal at {seen} UTC, after the agent had joined)"


def _in_time_order(steps: list[TimelineStep]) -> list[TimelineStep]:
    """The dated steps in the order they happened (a stable sort: steps stamped at the same
    moment keep their logical order); an undated step (not yet, not reached) keeps its place
    in the sequence, so the page reads trigger -> request -> job -> join where nothing
    says otherwise."""
    dated = sorted((s for s in steps if s.at is not None), key=lambda s: s.at)  # type: ignore[arg-type, return-value]
    ordered = iter(dated)
    return [next(ordered) if s.at is not None else s for s in steps]


@dataclass(frozen=True, slots=True)
class AgentSighting:
    """The last time a worker under an agent's name was seen: it joined a room, or took a
    job, as the ledger and LiveKit's webhooks recorded it."""

    agent_name: str
    at: datetime
    how: str  # "joined" or "took a job"
    participant_identity: str
    room_name: str


def agents_last_seen(*, agent_names: list[str]) -> dict[str, AgentSighting]:
    """Per agent name, its latest sighting; names never seen are absent. Facts read: the
    dispatches' job_assigned_at / joined_at (with the agent's participant identity) and
    LiveKit's participant_joined webhooks for agent participants. The one place these facts
    are gathered, so richer ones (worker registrations) can be added here later."""
    seen: dict[str, AgentSighting] = {}

    def keep(sighting: AgentSighting) -> None:
        current = seen.get(sighting.agent_name)
        if current is None or sighting.at > current.at:
            seen[sighting.agent_name] = sighting

    for field_name, how in (("joined_at", "joined"), ("job_assigned_at", "took a job")):
        latest = (
            Dispatch.objects.filter(agent_name__in=agent_names, **{f"{field_name}__isnull": False})
            .values("agent_name")
            .annotate(last=Max(field_name))
        )
        pairs = Q(pk__in=[])
        for row in latest:
            pairs |= Q(agent_name=row["agent_name"], **{field_name: row["last"]})
        for agent_name, at, identity, room_name in Dispatch.objects.filter(pairs).values_list(
            "agent_name", field_name, "participant_identity", "room__name"
        ):
            keep(AgentSighting(agent_name, at, how, identity, room_name))
    # An empty agent_name in a webhook means "not an agent", so only named agents are looked up.
    named = [name for name in agent_names if name]
    joins = WebhookEvent.objects.filter(event="participant_joined", agent_name__in=named)
    latest_ids = joins.values("agent_name").annotate(last=Max("id")).values("last")
    for agent_name, at, identity, room_name in WebhookEvent.objects.filter(id__in=latest_ids).values_list(
        "agent_name", "received_at", "participant_identity", "room_name"
    ):
        keep(AgentSighting(agent_name, at, "joined", identity, room_name))
    return seen
