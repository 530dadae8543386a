"""Reads of the dispatch ledger: what the token path, the REST API and admin ask.

(The token path reads whether a room is live in the same statement that records its token:
`services.token_fact_record`.)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime

from django.core.cache import cache

from agents_app.selectors import ClientScope
from dispatchportal.exceptions import NotFound

from .models import Dispatch, Room


def dispatch_get(*, dispatch_id: int, client: ClientScope | None) -> Dispatch:
    """One dispatch, if the caller may see it (staff: any; a client: rooms in its patterns).
    Out of scope is reported as not found, so ids of other clients' rooms do not leak."""
    dispatch = Dispatch.objects.select_related("room", "agent").filter(pk=dispatch_id).first()
    if dispatch is None or (client is not None and not client.room_allowed(dispatch.room.name)):
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


def room_state(*, room_name: str) -> RoomState:
    """The agents the portal wants in a room and where each stands: the latest attempt per
    agent, leaving out cancelled ones and, in a live room, leftovers of an earlier session."""
    room = Room.objects.filter(name=room_name).first()
    if room is None:
        return RoomState(room_name=room_name, status="unknown")
    latest: dict[str, Dispatch] = {}
    replaced: set[int] = set()
    for dispatch in Dispatch.objects.filter(room=room).order_by("id"):
        latest[dispatch.agent_name] = dispatch
        if dispatch.previous_id:
            replaced.add(dispatch.previous_id)
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
            )
        )
    agents.sort(key=lambda a: a.agent_name)
    return RoomState(
        room_name=room.name,
        status=room.status,
        sid=room.sid,
        num_participants=room.num_participants,
        agents=agents,
    )


@dataclass(frozen=True, slots=True)
class LiveKitStatus:
    ok: bool
    problem: str = ""


_STATUS_KEY = "rooms:livekit-status"
_STATUS_TTL_S = 15


def livekit_status(*, timeout_s: float = 2.0) -> LiveKitStatus:
    """Can the portal reach LiveKit with its credentials? Asked with a short timeout and
    cached briefly, so admin pages showing it stay fast when LiveKit is down."""
    from .livekit_client import LiveKitAuthRejected, LiveKitError, livekit_run

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
