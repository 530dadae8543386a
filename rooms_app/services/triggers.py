"""What asks for an agent, and what the webhooks report: explicit rules on a room, the
Dispatch API and admin actions, agents and people joining and leaving. (The token path's
record is a fact: see `facts`.) All ledger writes; the LiveKit side is enqueued (see
`lifecycle`).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents_app.models import Agent
from agents_app.rules import Join
from agents_app.selectors import ClientScope, config_get
from dispatchportal.exceptions import Forbidden, NotFound
from dispatchportal.reserved import CANARY_ROOM_PREFIX, is_canary_room
from livekit_boundary.client import (
    ROOM_GONE_REASONS,
    LiveKitUnavailable,
    LkParticipant,
)

from ..models import LIVE_STATUSES, Dispatch, Room
from .jobs import dispatch_remove_enqueue, dispatch_token_check_enqueue
from .ledger import (
    agent_extra_remove,
    agent_joined_record,
    agent_left_record,
    dispatch_create,
    dispatch_note,
    dispatch_transition,
    room_get_or_create,
)
from .lifecycle import dispatch_first_try_claim, dispatch_request_first
from .matching import Verdict, participant_match, session_rows

logger = logging.getLogger(__name__)


# --- rules on a room ----------------------------------------------------------------------


def room_rules_apply(*, room: Room, source: str = Dispatch.Source.RULE) -> list[Dispatch]:
    """Dispatch the explicit-delivery rules' agents for a room (no participant: a room made by
    another app, SIP, or the room_started webhook). Agents with a live dispatch are skipped."""
    wanted = [a for a in room_explicit_agents(room_name=room.name) if a.delivery == "explicit"]
    if not wanted:
        return []
    agents = {
        a.agent_name: a
        for a in Agent.objects.filter(agent_name__in=[w.agent_name for w in wanted], enabled=True)
    }
    created = []
    for applied in wanted:
        agent = agents.get(applied.agent_name)
        if agent is None:
            continue
        dispatch, new = dispatch_create(
            room=room,
            agent=agent,
            source=source,
            metadata=applied.metadata,
            rule_name=applied.rule,
            deployment=applied.deployment,
            attributes=dict(applied.attributes),
        )
        if new:
            created.append(dispatch)
    return created


def room_explicit_agents(*, room_name: str) -> list[Any]:
    """Agents the rules give a room by itself (no participant identity or attributes)."""
    return [
        a for a in config_get().rules.evaluate(Join(room_name=room_name)).agents if a.delivery == "explicit"
    ]


# --- the Dispatch API and admin actions ------------------------------------------------------


def dispatch_api_create(
    *,
    client: ClientScope | None,
    requested_by: str,
    room_name: str,
    agent_name: str,
    metadata: str | None,
    deployment: str = "",
    attributes: dict[str, str] | None = None,
) -> tuple[Dispatch, bool]:
    """POST /api/v1/dispatches: an explicit dispatch within the caller's scope. `client` is
    None for staff. Returns the dispatch and whether it is new (else the live one, whose
    timeline notes the request).

    A new dispatch is sent to LiveKit from the request itself once recorded (one short
    CreateDispatch, under the same lease that makes the task exactly-once), so the agent is
    not kept waiting on the broker and a worker's poll; the task queued with it is the retry
    path, run only if this try did not get LiveKit's answer."""
    agent = Agent.objects.filter(agent_name=agent_name).first()
    # An agent the client may not name is unknown to it: the same answer, so names of other
    # clients' agents cannot be enumerated.
    if agent is None or (client is not None and agent_name not in client.agent_names):
        raise NotFound(f"unknown agent '{agent_name}'", field="agent_name")
    if client is not None and not client.room_allowed(room_name):
        raise Forbidden(f"room '{room_name}' is outside this client's room patterns", field="room_name")
    if not agent.enabled:
        raise Forbidden(f"agent '{agent_name}' is disabled", field="agent_name")
    if is_canary_room(room_name):
        raise Forbidden(
            f"room names starting '{CANARY_ROOM_PREFIX}' are reserved for canaries", field="room_name"
        )
    with transaction.atomic():
        room = room_get_or_create(name=room_name)
        dispatch, created = dispatch_create(
            room=room,
            agent=agent,
            source=Dispatch.Source.API,
            metadata=metadata,
            requested_by=requested_by,
            deployment=deployment,
            attributes=attributes or {},
            request_countdown=float(settings.LIVEKIT_TIMEOUT_S) + 1.0,
            **dispatch_first_try_claim(),
        )
        if not created:  # the request is a fact too: on the live dispatch's timeline
            differs = metadata is not None and metadata != dispatch.metadata
            dispatch_note(
                dispatch=dispatch,
                detail=f"Dispatch API: {requested_by} asked for '{agent_name}' again; answered 409, nothing "
                "created" + ("; their different metadata was not applied" if differs else ""),
            )
    if created:
        _request_inline(dispatch=dispatch)
    return dispatch, created


def _request_inline(*, dispatch: Dispatch) -> None:
    try:
        dispatch_request_first(
            dispatch=dispatch, timeout_s=float(getattr(settings, "DISPATCH_INLINE_TIMEOUT_S", 1.0))
        )
    except LiveKitUnavailable:
        return  # the queued task tries again (and looks up what this try may have made)
    dispatch.refresh_from_db()


def dispatch_cancel(*, dispatch: Dispatch, by: str) -> bool:
    """Cancel a live dispatch; its LiveKit dispatch (and so the agent) is removed by a task."""
    with transaction.atomic():
        done = dispatch_transition(
            dispatch=dispatch, to=Dispatch.Status.CANCELLED, expect=LIVE_STATUSES, detail=f"cancelled by {by}"
        )
        if done:
            dispatch_remove_enqueue(dispatch_id=dispatch.pk)
    return done


def dispatch_redispatch(*, dispatch: Dispatch, by: str) -> Dispatch | None:
    """Admin action: try a finished dispatch again as a new attempt (beyond max attempts:
    a person asked). None when the agent already has a live dispatch or cannot be sent."""
    agent = dispatch.agent
    if dispatch.is_live or agent is None or not agent.enabled:
        return None
    with transaction.atomic():
        room = Room.objects.get(pk=dispatch.room_id)
        if room.status == Room.Status.FINISHED:
            return None
        new, created = dispatch_create(
            room=room,
            agent=agent,
            source=dispatch.source,
            metadata=dispatch.metadata,
            rule_name=dispatch.rule_name,
            requested_by=by,
            deployment=dispatch.deployment,
            attributes=dispatch.attributes,
            attempt=dispatch.attempt + 1,
            previous=dispatch,
            detail=f"re-dispatched by {by} (attempt {dispatch.attempt + 1}, replacing #{dispatch.pk})",
        )
    return new if created else None


# --- agents joining and leaving (webhooks) ----------------------------------------------


def agent_participant_joined(
    *, room: Room, participant: LkParticipant, how: str = "webhook"
) -> Dispatch | None:
    """An agent-kind participant joined; the shared matcher (`matching`) says whose it is.
    A live dispatch's agent is recorded as joined; a second agent of one name, or the agent of
    a cancelled dispatch (its join reported late), is removed from the room; a managed agent
    with no row is adopted. Agents the portal does not manage are ignored."""
    match = participant_match(participant=participant, rows=session_rows(room=room))
    dispatch = match.dispatch
    if dispatch is not None:
        dispatch.room = room
    if match.verdict is Verdict.JOINED and dispatch is not None:
        if dispatch.status == Dispatch.Status.AGENT_JOINED:
            return dispatch
        if not agent_joined_record(dispatch=dispatch, participant=participant, how=how):
            dispatch.refresh_from_db()  # lost a race: another agent's join was recorded first
            if (
                dispatch.status == Dispatch.Status.AGENT_JOINED
                and dispatch.participant_identity != participant.identity
            ):
                _second_agent_remove(dispatch=dispatch, identity=participant.identity)
        return dispatch
    if match.verdict is Verdict.DUPLICATE and dispatch is not None:
        _second_agent_remove(dispatch=dispatch, identity=participant.identity)
        return dispatch
    if match.verdict is Verdict.CANCELLED and dispatch is not None:
        agent_extra_remove(
            dispatch=dispatch,
            identity=participant.identity,
            why=f"agent participant '{participant.identity}' of this cancelled dispatch is in the room ({how})",
        )
        return dispatch
    if not participant.agent_name:
        return None  # not an agent, or an unnamed worker (LiveKit's implicit "" dispatch)
    agent = Agent.objects.filter(agent_name=participant.agent_name).first()
    if agent is None:
        return None  # not ours: another product's agent, or an unnamed worker
    dispatch, created = dispatch_create(
        room=room,
        agent=agent,
        source=Dispatch.Source.RECONCILE,
        status=Dispatch.Status.AGENT_JOINED,
        participant_identity=participant.identity,
        joined_at=participant.joined_at or timezone.now(),
        detail=f"agent participant '{participant.identity}' joined with no dispatch in the ledger ({how}); recorded",
    )
    if not created:
        dispatch.room = room
        agent_joined_record(dispatch=dispatch, participant=participant, how=how)
    return dispatch


def _second_agent_remove(*, dispatch: Dispatch, identity: str) -> None:
    agent_extra_remove(
        dispatch=dispatch,
        identity=identity,
        why=f"a second '{dispatch.agent_name}' agent joined as '{identity}' (this dispatch's agent is "
        f"'{dispatch.participant_identity}')",
    )


def agent_participant_left(
    *, room: Room, participant: LkParticipant, how: str = "webhook"
) -> Dispatch | None:
    """The agent's participant left. While the room lives on, that is a failure to repair:
    self-hosted LiveKit never re-dispatches, so the portal does."""
    dispatch = (
        Dispatch.objects.filter(
            room=room, status=Dispatch.Status.AGENT_JOINED, participant_identity=participant.identity
        )
        .select_related("agent")
        .first()
    )
    if dispatch is None:
        return None
    dispatch.room = room
    if participant.disconnect_reason in ROOM_GONE_REASONS or room.status == Room.Status.FINISHED:
        agent_left_record(dispatch=dispatch, error="the room closed", room_closed=True)
        return dispatch
    error = f"agent participant '{participant.identity}' left the room ({how}"
    if participant.disconnect_reason:
        error += f", reason {participant.disconnect_reason}"
    agent_left_record(dispatch=dispatch, error=error + ")")
    return dispatch


def person_joined(*, room: Room, participant: LkParticipant) -> int:
    """A participant who is not an agent joined. If its token carried agents still waiting
    for LiveKit, check now whether LiveKit honoured them (it does not when the room existed
    before this join): the check task dispatches them explicitly if not."""
    waiting = Dispatch.objects.filter(
        room=room,
        status=Dispatch.Status.PENDING,
        delivery=Dispatch.Delivery.TOKEN,
        participant_identity_trigger=participant.identity,
    ).values_list("pk", flat=True)
    ids = list(waiting)
    for dispatch_id in ids:
        dispatch_token_check_enqueue(dispatch_id=dispatch_id, identity=participant.identity)
    return len(ids)
