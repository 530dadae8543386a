"""What asks for an agent, and what the webhooks report: the token path, explicit rules on a
room, the Dispatch API and admin actions, agents joining and leaving. All ledger writes; the
LiveKit side is enqueued (see `lifecycle`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents_app.models import Agent
from agents_app.ratelimit import Push
from agents_app.rules import Join
from agents_app.selectors import ClientScope, config_get
from dispatchportal.exceptions import Forbidden, NotFound
from dispatchportal.redis import BROKER_ERRORS, redis_client, redis_key

from ..livekit_client import (
    ROOM_GONE_REASONS,
    LkParticipant,
)
from ..models import LIVE_STATUSES, Dispatch, Room
from .ledger import (
    S,
    agent_joined_record,
    dispatch_create,
    dispatch_note,
    dispatch_retry,
    dispatch_transition,
    enqueue,
    room_get_or_create,
)

logger = logging.getLogger(__name__)


# --- the token path -------------------------------------------------------------------------


TOKEN_EVENTS = ("rooms", "token-events")
DRAIN_SCHEDULED = ("rooms", "token-drain-scheduled")
DRAIN_LOCK = ("rooms", "token-drain-lock")
DRAIN_DELAY_S = 1.0
DRAIN_BATCH = 200


def _token_event(
    *, room_name: str, participant_identity: str, agents: Sequence[Any], client: str
) -> dict[str, Any]:
    return {
        "room_name": room_name,
        "participant_identity": participant_identity,
        "agents": [
            {"agent_name": a.agent_name, "rule": a.rule, "metadata": a.metadata, "delivery": a.delivery}
            for a in agents
        ],
        "client": client,
        "minted_at": time.time(),
    }


def token_handoff(
    *, room_name: str, participant_identity: str, agents: Sequence[Any], client: str
) -> Push | None:
    """What the token path queues in Redis, in the same round trip that admits the request
    (`agents_app.ratelimit.admit`): the token's event, and a flag whose first setter each
    second schedules the drain (`token_drain_schedule`). None without Redis."""
    if redis_client() is None:
        return None
    event = _token_event(
        room_name=room_name, participant_identity=participant_identity, agents=agents, client=client
    )
    return Push(
        list_key=redis_key(*TOKEN_EVENTS),
        item=json.dumps(event),
        flag_key=redis_key(*DRAIN_SCHEDULED),
        flag_ms=int(DRAIN_DELAY_S * 1000),
    )


def token_drain_schedule() -> None:
    """Drain the queue once the current second ends: a Celery publish (about 1 ms) is paid
    once a second, not per token."""
    from .. import tasks

    try:
        tasks.token_events_drain.apply_async(countdown=DRAIN_DELAY_S, retry=False)
    except BROKER_ERRORS:  # the next second's first token, or reconcile, drains instead
        logger.warning("could not schedule the token drain", exc_info=True)


def token_minted(*, room_name: str, participant_identity: str, agents: Sequence[Any], client: str) -> None:
    """Hand a minted token's agents over when they could not be queued in Redis (embedded
    set-up, or Redis down): one task per token. No database write on the request path."""
    from .. import tasks

    event = _token_event(
        room_name=room_name, participant_identity=participant_identity, agents=agents, client=client
    )
    try:
        tasks.token_dispatches_record.apply_async(kwargs=event, retry=False)
    except BROKER_ERRORS:
        # The token is valid either way; the join deadline and reconcile still cover the room.
        logger.warning("could not hand the token's dispatches over", extra={"room": room_name}, exc_info=True)


def _queued_event(raw: bytes) -> dict[str, Any]:
    """A queued event: '1' or '0' (the room was live when the token was minted, so its agents
    went out as explicit dispatches, as the token's answer said), then the JSON."""
    text = raw.decode()
    event = json.loads(text[1:])
    if text[0] == "1":
        event["agents"] = [{**a, "delivery": "explicit"} for a in event["agents"]]
    return event


def token_events_drain() -> int:
    """Record queued token events in the ledger. At least once: a batch is removed only after
    it is recorded, so a worker killed mid-drain loses nothing (a replayed event finds its
    dispatch already live). One drain at a time."""
    redis = redis_client()
    if redis is None:
        return 0
    lock = redis.lock(redis_key(*DRAIN_LOCK), timeout=120, blocking=False)
    if not lock.acquire():
        return 0
    drained = 0
    try:
        key = redis_key(*TOKEN_EVENTS)
        while batch := redis.lrange(key, 0, DRAIN_BATCH - 1):
            for raw in batch:
                token_dispatches_record(**_queued_event(raw))
            redis.ltrim(key, len(batch), -1)
            drained += len(batch)
    finally:
        lock.release()
    return drained


def token_dispatches_record(
    *,
    room_name: str,
    participant_identity: str,
    agents: Sequence[dict[str, str]],
    client: str,
    minted_at: float,
) -> list[Dispatch]:
    """Record a minted token's agents: token-delivered ones as `pending` (LiveKit dispatches
    them when the join creates the room), explicit ones dispatched now."""
    minted = datetime.fromtimestamp(minted_at, tz=UTC)
    with transaction.atomic():
        room = room_get_or_create(name=room_name)
        updates: dict[str, Any] = {"last_token_at": minted, "tokens_minted": F("tokens_minted") + 1}
        if room.first_token_at is None:
            updates["first_token_at"] = minted
            updates["existed_before_token"] = bool(
                room.status == Room.Status.ACTIVE and room.started_at and room.started_at < minted
            )
        Room.objects.filter(pk=room.pk).update(**updates)
        room.refresh_from_db()
        by_name = {
            a.agent_name: a for a in Agent.objects.filter(agent_name__in=[x["agent_name"] for x in agents])
        }
        recorded = []
        for item in agents:
            agent = by_name.get(item["agent_name"])
            if agent is None:
                logger.warning("token named unknown agent %r", item["agent_name"], extra={"room": room_name})
                continue
            dispatch, created = dispatch_create(
                room=room,
                agent=agent,
                source=Dispatch.Source.TOKEN,
                delivery=item["delivery"],
                metadata=item["metadata"],
                rule_name=item["rule"],
                requested_by=client,
                identity_trigger=participant_identity,
            )
            if not created and dispatch.source == Dispatch.Source.RECONCILE and not dispatch.rule_name:
                _token_attribute(dispatch=dispatch, item=item, client=client, identity=participant_identity)
            recorded.append(dispatch)
    return recorded


def _token_attribute(*, dispatch: Dispatch, item: dict[str, str], client: str, identity: str) -> None:
    """The agent's participant_joined webhook beat the token's record (the real server sends
    the token's agent within about a second of the join, the token drain runs each second), so
    the join was recorded as an agent with no dispatch. The token is what brought it: say so."""
    fields = {
        "source": Dispatch.Source.TOKEN,
        "delivery": item["delivery"],
        "rule_name": item["rule"],
        "requested_by": client,
        "participant_identity_trigger": identity,
        "metadata": item["metadata"],
    }
    Dispatch.objects.filter(pk=dispatch.pk).update(**fields)
    for name, value in fields.items():
        setattr(dispatch, name, value)
    dispatch_note(
        dispatch=dispatch,
        detail=f"brought by the token minted for '{identity}' (rule '{item['rule']}'), recorded after the agent joined",
    )


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
            room=room, agent=agent, source=source, metadata=applied.metadata, rule_name=applied.rule
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
    *, client: ClientScope | None, requested_by: str, room_name: str, agent_name: str, metadata: str | None
) -> tuple[Dispatch, bool]:
    """POST /api/v1/dispatches: an explicit dispatch within the caller's scope. `client` is
    None for staff. Returns the dispatch and whether it is new (else the live one)."""
    agent = Agent.objects.filter(agent_name=agent_name).first()
    if agent is None:
        raise NotFound(f"unknown agent '{agent_name}'", field="agent_name")
    if client is not None and agent_name not in client.agent_names:
        raise Forbidden(f"agent '{agent_name}' is not allowed for this client", field="agent_name")
    if client is not None and not client.room_allowed(room_name):
        raise Forbidden(f"room '{room_name}' is outside this client's room patterns", field="room_name")
    if not agent.enabled:
        raise Forbidden(f"agent '{agent_name}' is disabled", field="agent_name")
    with transaction.atomic():
        room = room_get_or_create(name=room_name)
        return dispatch_create(
            room=room, agent=agent, source=Dispatch.Source.API, metadata=metadata, requested_by=requested_by
        )


def dispatch_cancel(*, dispatch: Dispatch, by: str) -> bool:
    """Cancel a live dispatch; its LiveKit dispatch (and so the agent) is removed by a task."""
    with transaction.atomic():
        done = dispatch_transition(
            dispatch=dispatch, to=S.CANCELLED, expect=LIVE_STATUSES, detail=f"cancelled by {by}"
        )
        if done:
            enqueue("dispatch_remove", dispatch.pk)
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
            attempt=dispatch.attempt + 1,
            previous=dispatch,
            detail=f"re-dispatched by {by} (attempt {dispatch.attempt + 1}, replacing #{dispatch.pk})",
        )
    return new if created else None


# --- agents joining and leaving (webhooks) ----------------------------------------------


def agent_participant_joined(
    *, room: Room, participant: LkParticipant, how: str = "webhook"
) -> Dispatch | None:
    """An agent-kind participant joined: match it to the live dispatch of its agent name
    (`lk.agent_name`), or by the job's participant identity; adopt a managed agent that
    joined with no dispatch in the ledger. Agents the portal does not manage are ignored."""
    live = list(Dispatch.objects.filter(room=room, status__in=LIVE_STATUSES))
    match = next((d for d in live if d.participant_identity == participant.identity), None)
    if match is None:
        job_id = participant.identity.removeprefix("agent-")
        match = next((d for d in live if d.livekit_job_id and d.livekit_job_id == job_id), None)
    if match is None and participant.agent_name is not None:
        match = next((d for d in live if d.agent_name == participant.agent_name), None)
    if match is not None:
        match.room = room
        if match.status == S.AGENT_JOINED:
            if match.participant_identity != participant.identity:
                dispatch_note(
                    dispatch=match,
                    detail=f"a second '{match.agent_name}' agent joined as '{participant.identity}' "
                    f"(already present: '{match.participant_identity}')",
                    level=logging.WARNING,
                )
            return match
        agent_joined_record(dispatch=match, participant=participant, how=how)
        return match
    if not participant.agent_name:
        return None  # not an agent, or an unnamed worker (LiveKit's implicit "" dispatch)
    agent = Agent.objects.filter(agent_name=participant.agent_name).first()
    if agent is None:
        return None  # not ours: another product's agent, or an unnamed worker
    dispatch, created = dispatch_create(
        room=room,
        agent=agent,
        source=Dispatch.Source.RECONCILE,
        status=S.AGENT_JOINED,
        participant_identity=participant.identity,
        joined_at=participant.joined_at or timezone.now(),
        detail=f"agent participant '{participant.identity}' joined with no dispatch in the ledger ({how}); recorded",
    )
    if not created:
        dispatch.room = room
        agent_joined_record(dispatch=dispatch, participant=participant, how=how)
    return dispatch


def agent_participant_left(
    *, room: Room, participant: LkParticipant, how: str = "webhook"
) -> Dispatch | None:
    """The agent's participant left. While the room lives on, that is a failure to repair:
    self-hosted LiveKit never re-dispatches, so the portal does."""
    dispatch = (
        Dispatch.objects.filter(room=room, status=S.AGENT_JOINED, participant_identity=participant.identity)
        .select_related("agent")
        .first()
    )
    if dispatch is None:
        return None
    dispatch.room = room
    now = timezone.now()
    if participant.disconnect_reason in ROOM_GONE_REASONS or room.status == Room.Status.FINISHED:
        dispatch_transition(
            dispatch=dispatch,
            to=S.ROOM_CLOSED,
            expect=(S.AGENT_JOINED,),
            detail="the room closed",
            left_at=now,
        )
        return dispatch
    error = f"agent participant '{participant.identity}' left the room ({how}"
    if participant.disconnect_reason:
        error += f", reason {participant.disconnect_reason}"
    error += ")"
    with transaction.atomic():
        if dispatch_transition(
            dispatch=dispatch,
            to=S.FAILED,
            expect=(S.AGENT_JOINED,),
            detail=error,
            last_error=error,
            left_at=now,
        ):
            dispatch_retry(dispatch=dispatch)
    return dispatch
