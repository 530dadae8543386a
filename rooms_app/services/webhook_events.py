"""LiveKit webhooks after verification: recorded on the request, applied to the ledger off it.

The request (`rooms_app.webhooks`) verifies the event and records it here in one short
statement: the event's unique id makes a redelivery a no-op, and the recorded row is durable
before LiveKit hears 200. Its effects on the ledger (rooms started and finished, agents joined
and left, the explicit rules a new room gets, the LiveKit calls those enqueue) are applied by
`webhook_events_apply`: a Celery task sent once the event is recorded, and every reconcile
pass, so an event whose task was lost (a broker outage) is applied by the next pass.

Rooms are spread over `SHARDS` shards by a stable hash of their name (`webhook_shard`, kept
on the event's row). One application per shard runs at a time (a lock across processes) and
takes that shard's events in the order they were recorded, so one room's events are applied
in the order LiveKit's node sent them, while the other shards are applied at once by other
Celery processes or workers. Each recorded event queues its own shard's application.
Events are applied in batches, one transaction each with their `applied_at` (one commit per
batch, not per event): a crash applies the batch again from the start, never half. A batch
is a quarter of the shard's events waiting, from one event (a quiet portal: a new room's dispatches
leave on its own commit) up to `APPLY_BATCH` (a backlog). Each event has its own savepoint:
one whose application raises (a ledger bug, an event no LiveKit sends) is rolled back alone,
kept with its error and not retried, so it never holds up the others.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from datetime import UTC, datetime
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.core.cache import cache
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.utils import timezone
from google.protobuf import json_format
from livekit.protocol import webhook as webhook_proto

from agents_app.selectors import config_get
from dispatchportal.locks import lock_try
from dispatchportal.redis import REDIS_ERRORS
from dispatchportal.reserved import is_canary_room
from livekit_boundary.client import participant_from_proto

from ..models import Room, WebhookEvent
from .facts import agent_sightings, agents_seen_record, token_facts_apply
from .jobs import webhook_events_apply_enqueue
from .ledger import room_finished, room_observe, room_participants_observe
from .triggers import agent_participant_joined, agent_participant_left, person_joined, room_rules_apply

logger = logging.getLogger(__name__)

PARTICIPANT_LEFT_EVENTS = ("participant_left", "participant_connection_aborted")
# Events per transaction, at most: one commit per batch; a transient error re-applies the
# batch. A transaction takes 1/BACKLOG_SHARE of the events waiting (`_batch_size`).
APPLY_BATCH = 50
BACKLOG_SHARE = 4
LOCK_TIMEOUT_S = 120
# Inside the Celery task's 30 s soft time limit, and well inside the lock's expiry.
APPLY_BUDGET_S = 20.0
# While a shard's application is queued, later events do not queue another (it will find them).
QUEUED_KEY = "rooms:webhook-events-apply-queued"
QUEUED_TTL_S = 30
# Fixed, not a setting: a pending event's shard is on its row, and one room's events must never
# be split between two shards (two appliers could then reorder them).
SHARDS = 32


def webhook_shard(room_name: str) -> int:
    """The shard of a room's events: the same for every process and every run."""
    return zlib.crc32(room_name.encode()) % SHARDS


def webhook_event_record(*, event: Any) -> bool:
    """Record one verified event (`livekit.protocol.webhook.WebhookEvent`) with its id; False
    if that id was recorded already. Its application is queued once this commits.

    On the request (autocommit) the record is one INSERT, its own transaction: a redelivered
    id fails that statement alone. Inside a caller's transaction it takes a savepoint, so a
    redelivery does not break the caller's transaction."""
    participant = participant_from_proto(event.participant) if event.HasField("participant") else None
    shard = webhook_shard(event.room.name)
    alone = transaction.atomic() if transaction.get_connection().in_atomic_block else contextlib.nullcontext()
    try:
        with alone:
            WebhookEvent.objects.create(
                event_id=event.id,
                event=event.event,
                room_name=event.room.name,
                shard=shard,
                participant_identity=participant.identity if participant else "",
                agent_name=(participant.agent_name or "") if participant else "",
                created_at=datetime.fromtimestamp(event.created_at, tz=UTC) if event.created_at else None,
                payload=json_format.MessageToDict(event),
            )
    except IntegrityError:
        return False
    transaction.on_commit(lambda: _apply_queue(shard))
    return True


def _apply_queue(shard: int) -> None:
    try:
        first = cache.add(f"{QUEUED_KEY}:{shard}", 1, timeout=QUEUED_TTL_S)
    except REDIS_ERRORS:  # Redis down: the broker is too; sending logs it, reconcile catches up
        first = True
    if first:
        webhook_events_apply_enqueue(shard=shard)


def webhook_events_apply(*, shard: int | None = None, budget_s: float = APPLY_BUDGET_S) -> int:
    """Apply one shard's recorded events not applied yet (every shard with events pending, one
    after the other, when `shard` is None: the reconcile pass), oldest first, for about
    `budget_s` in all (inside the task's time limit, and shorter than the lock's expiry so no
    second application of a shard can start meanwhile); returns how many. A shard's events still
    pending then are left to another application, queued here. A shard another process is
    applying is skipped (that one takes these too)."""
    if shard is not None and not 0 <= shard < SHARDS:
        raise ValueError(f"shard {shard} is not in 0..{SHARDS - 1}")
    deadline = time.monotonic() + budget_s
    if shard is not None:
        return _shard_apply(shard, deadline=deadline)
    pending = WebhookEvent.objects.filter(applied_at__isnull=True).order_by("shard")
    shards = list(pending.values_list("shard", flat=True).distinct())
    return sum(_shard_apply(s, deadline=deadline) for s in shards)


def _shard_apply(shard: int, *, deadline: float) -> int:
    with contextlib.suppress(*REDIS_ERRORS):
        cache.delete(f"{QUEUED_KEY}:{shard}")  # events recorded from now on queue another application
    pending = WebhookEvent.objects.filter(shard=shard, applied_at__isnull=True)
    applied = 0
    while True:
        with lock_try(f"rooms:webhook-events-apply:{shard}", timeout_s=LOCK_TIMEOUT_S) as held:
            if not held:
                return applied
            # The events were recorded in other processes, perhaps just after a rule change
            # made there: apply them with the rules as they are now.
            config_get(fresh=True)
            while time.monotonic() < deadline and (
                waiting := list(
                    pending.order_by("id").values_list("id", flat=True)[: APPLY_BATCH * BACKLOG_SHARE]
                )
            ):
                applied += _apply_batch(waiting[: _batch_size(len(waiting))], deadline=deadline)
        # Out of time, or an event recorded between the last empty read and the release
        # found the lock held and queued no one: look once more.
        if not pending.exists():
            return applied
        if time.monotonic() > deadline:
            webhook_events_apply_enqueue(shard=shard)
            return applied


def _batch_size(waiting: int) -> int:
    """Events for the next transaction: a share of those waiting, at least one and at most
    `APPLY_BATCH`. A quiet portal commits each event on its own, so the dispatches a
    room_started enqueues on commit leave at once; a backlog is taken in batches."""
    return max(1, min(APPLY_BATCH, waiting // BACKLOG_SHARE))


def _apply_batch(pks: list[int], *, deadline: float) -> int:
    """Apply these events in recorded order, in one transaction with their `applied_at`
    (one commit per batch instead of one per event), each in its own savepoint: an event that
    raises is rolled back alone and kept with its error. The agent names the batch saw join
    are recorded once, at its end, in name order: the shards' batches share those rows, so
    each holds them only for its commit and all take them in one order. Stops early past
    `deadline`; returns how many it took in."""
    with transaction.atomic():
        rows = list(
            WebhookEvent.objects.select_for_update()
            .filter(pk__in=pks, applied_at__isnull=True)
            .order_by("id")
        )
        taken: list[int] = []
        errors: dict[int, str] = {}
        sightings: list[tuple[str, str, str]] = []
        for row in rows:
            try:
                with transaction.atomic():
                    webhook_event_apply(event=_event_of(row), sightings=sightings)
            except (OperationalError, InterfaceError, SoftTimeLimitExceeded):
                raise  # the database went away, or the task's time is up: the batch stays pending
            except Exception as exc:  # noqa: BLE001  one bad event must not hold up the others
                logger.exception("webhook event %s could not be applied", row.event_id)
                errors[row.pk] = f"{type(exc).__name__}: {exc}"[:2000]
            taken.append(row.pk)
            if time.monotonic() > deadline:
                break
        agents_seen_record(seen=sightings)
        now = timezone.now()
        WebhookEvent.objects.filter(pk__in=[pk for pk in taken if pk not in errors]).update(applied_at=now)
        for pk, error in errors.items():
            WebhookEvent.objects.filter(pk=pk).update(applied_at=now, apply_error=error)
    return len(taken)


def _event_of(row: WebhookEvent) -> Any:
    event = webhook_proto.WebhookEvent()
    json_format.ParseDict(row.payload or {}, event, ignore_unknown_fields=True)
    event.id = row.event_id
    return event


def _room_started_at(room: Any) -> datetime | None:
    seconds = room.creation_time_ms / 1000 if room.creation_time_ms else room.creation_time
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None


def webhook_event_apply(*, event: Any, sightings: list[tuple[str, str, str]]) -> None:
    """What one event changes in the ledger (inside the caller's transaction). The agent names
    seen joining are added to `sightings`, for the caller to record (`agents_seen_record`)."""
    name = event.room.name
    if not name or is_canary_room(name):
        return  # canary probe rooms never enter the ledger
    participant = participant_from_proto(event.participant) if event.HasField("participant") else None
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
                sightings += agent_sightings(room_name=name, how="webhook", participants=[participant])
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
        known={} if existing is None else {existing.name: existing},
    )
    if not was_active:
        room_rules_apply(room=room)
    return room
