"""LiveKit webhooks: what each verified event changes in the ledger.

A webhook is trusted only if `livekit_boundary.webhooks.webhook_verify` accepts it: a JWT
signed with our API secret whose `sha256` claim is the hash of the exact body. Anything else is refused before a single
row is written. Delivery is at-least-once and unordered across retries, so each event id is
recorded in the same transaction as its effects: a redelivery finds the id and does nothing,
and a failure rolls both back so LiveKit's retry is processed.

The request path only writes the ledger; every LiveKit call it causes is a task enqueued on
commit, so the answer is fast whatever LiveKit is doing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction

from dispatchportal import metrics
from dispatchportal.exceptions import ApplicationError
from dispatchportal.limits import MAX_NAME_LENGTH
from dispatchportal.reserved import is_canary_room
from dispatchportal.serializers import name_problem
from livekit_boundary.client import participant_from_proto
from livekit_boundary.webhooks import webhook_verify

from .models import Room, WebhookEvent
from .services import (
    agent_participant_joined,
    agent_participant_left,
    agents_seen_in,
    person_joined,
    room_finished,
    room_observe,
    room_participants_observe,
    room_rules_apply,
    token_facts_apply,
)

logger = logging.getLogger(__name__)

PARTICIPANT_LEFT_EVENTS = ("participant_left", "participant_connection_aborted")


class Field:
    """The ledger's column sizes a webhook's values must fit."""

    EVENT_ID_MAX = WebhookEvent._meta.get_field("event_id").max_length
    EVENT_MAX = WebhookEvent._meta.get_field("event").max_length
    SID_MAX = Room._meta.get_field("sid").max_length
    AGENT_NAME_MAX = WebhookEvent._meta.get_field("agent_name").max_length


@dataclass(slots=True)
class WebhookOutcome:
    event: str
    event_id: str
    duplicate: bool = False


def webhook_receive(*, body: bytes, authorization: str) -> WebhookOutcome:
    event = webhook_verify(body=body, authorization=authorization)
    problems = webhook_event_problems(event=event)
    if problems:
        metrics.webhook_refused_record(reason="invalid fields")
        raise ApplicationError(problems)
    if not event.id:
        # LiveKit redelivers the same body: its digest stands in for the missing id.
        event.id = f"sha256:{hashlib.sha256(body).hexdigest()[:56]}"
    return webhook_event_handle(event=event)


def webhook_event_problems(*, event: Any) -> dict[str, list[str]]:
    """`{field: [message]}` for what no LiveKit server sends and the ledger cannot hold:
    oversize ids and names, names with control characters. Checked before anything is
    written, so a signed but absurd event is a 400, not a database error."""
    problems: dict[str, list[str]] = {}

    def check(field: str, value: str, limit: int | None, *, name: bool = False) -> None:
        if limit is not None and len(value) > limit:
            problems[field] = [f"Ensure this field has no more than {limit} characters."]
        elif name and (problem := name_problem(value)):
            problems[field] = [problem]

    check("id", event.id, Field.EVENT_ID_MAX)
    check("event", event.event, Field.EVENT_MAX)
    check("room.name", event.room.name, MAX_NAME_LENGTH, name=True)
    check("room.sid", event.room.sid, Field.SID_MAX)
    if event.HasField("participant"):
        check("participant.identity", event.participant.identity, MAX_NAME_LENGTH, name=True)
        agent_name = event.participant.attributes.get("lk.agent_name", "")
        check("participant.attributes.lk.agent_name", agent_name, Field.AGENT_NAME_MAX)
    return problems


def _created(event: Any) -> datetime | None:
    return datetime.fromtimestamp(event.created_at, tz=UTC) if event.created_at else None


def _room_started_at(room: Any) -> datetime | None:
    seconds = room.creation_time_ms / 1000 if room.creation_time_ms else room.creation_time
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None


@transaction.atomic
def webhook_event_handle(*, event: Any) -> WebhookOutcome:
    """Apply one verified event to the ledger, once per event id."""
    outcome = WebhookOutcome(event=event.event, event_id=event.id)
    metrics.webhook_event_record(event=event.event)
    name = event.room.name
    participant = participant_from_proto(event.participant) if event.HasField("participant") else None
    if event.id:
        try:
            with transaction.atomic():
                WebhookEvent.objects.create(
                    event_id=event.id,
                    event=event.event,
                    room_name=name,
                    participant_identity=participant.identity if participant else "",
                    agent_name=(participant.agent_name or "") if participant else "",
                    created_at=_created(event),
                )
        except IntegrityError:
            outcome.duplicate = True
            return outcome
    if not name or is_canary_room(name):
        return outcome  # canary probe rooms never enter the ledger
    kind = event.event
    room: Room | None
    if kind == "room_started":
        room = room_observe(
            name=name,
            sid=event.room.sid,
            started_at=_room_started_at(event.room),
            num_participants=event.room.num_participants,
        )
        room_rules_apply(room=room)
    elif kind == "room_finished":
        room_finished(name=name, sid=event.room.sid)
    elif kind == "participant_joined" and participant is not None:
        room = _room_for_participant_event(event)
        if room is not None:
            # The ledger takes in this room's token facts before it judges who joined: an
            # agent that LiveKit dispatched from a token is the token's, whichever came first.
            token_facts_apply(room_name=name)
            if participant.is_agent:
                agent_participant_joined(room=room, participant=participant)
                agents_seen_in(room_name=name, how="webhook", participants=[participant])
            else:
                person_joined(room=room, participant=participant)
    elif kind in PARTICIPANT_LEFT_EVENTS and participant is not None:
        room = Room.objects.filter(name=name).first()
        if room is not None:
            room_participants_observe(
                room=room, sid=event.room.sid, num_participants=event.room.num_participants
            )
            if participant.is_agent:
                agent_participant_left(room=room, participant=participant)
    return outcome


def _room_for_participant_event(event: Any) -> Room | None:
    """A participant event proves the room is live, even if room_started was lost; but a
    late event about a session already finished must not bring it back."""
    existing = Room.objects.filter(name=event.room.name).first()
    if existing is not None and existing.status == Room.Status.FINISHED and existing.sid == event.room.sid:
        return None
    was_active = (
        existing is not None and existing.status == Room.Status.ACTIVE and existing.sid == event.room.sid
    )
    room = room_observe(
        name=event.room.name,
        sid=event.room.sid,
        started_at=_room_started_at(event.room),
        num_participants=event.room.num_participants,
    )
    if not was_active:
        room_rules_apply(room=room)
    return room
