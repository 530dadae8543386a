"""`rooms_observe`: the one writer of a room's start, for the webhooks and reconcile alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from rooms_app import services
from rooms_app.models import Room
from rooms_app.services import RoomSeen

pytestmark = pytest.mark.django_db

T0 = timezone.now() - timedelta(minutes=5)


def _state(room: Room) -> tuple:
    room.refresh_from_db()
    return (room.status, room.sid, room.started_at, room.finished_at, room.num_participants)


def _prepare(name: str, kind: str) -> None:
    if kind == "pending":  # a token was minted, LiveKit has not reported the room
        services.room_get_or_create(name=name)
    elif kind == "finished":
        services.room_observe(name=name, sid="RM_old", started_at=T0, num_participants=1)
        services.room_finished(name=name, sid="RM_old")
    elif kind == "live":
        services.room_observe(name=name, sid="RM_old", started_at=T0, num_participants=1)


@pytest.mark.parametrize("before", ["unknown", "pending", "finished", "live"])
@pytest.mark.parametrize("sid", ["RM_old", "RM_new"])
def test_the_webhook_and_reconcile_record_the_same_room(before, sid):
    """The same LiveKit report leaves the same row whichever path brought it."""
    started = T0 + timedelta(minutes=1)
    _prepare("by-webhook", before)
    _prepare("by-reconcile", before)
    hook = services.room_observe(name="by-webhook", sid=sid, started_at=started, num_participants=3)
    observed = services.rooms_observe(
        seen=[RoomSeen(name="by-reconcile", sid=sid, started_at=started, num_participants=3)]
    )
    bulk = observed.rooms["by-reconcile"]
    assert _state(hook) == _state(bulk)
    assert hook.status == Room.Status.ACTIVE and hook.sid == sid and hook.num_participants == 3
    went_live = before != "live" or sid == "RM_new"
    assert bool(observed.started) == went_live
    assert hook.started_at == (started if went_live else T0)


def test_a_room_the_token_path_records_meanwhile_still_goes_live():
    """Reconcile read the ledger before a token's fact created the room (pending); its report
    must take that row live, not skip it as someone else's."""
    ledger_read_before: dict[str, Room] = {}
    services.room_get_or_create(name="support-1")  # the token path, between read and write
    observed = services.rooms_observe(
        seen=[RoomSeen(name="support-1", sid="RM_1", started_at=T0, num_participants=1)],
        known=ledger_read_before,
    )
    room = Room.objects.get(name="support-1")
    assert (room.status, room.sid, room.started_at) == (Room.Status.ACTIVE, "RM_1", T0)
    assert [r.name for r in observed.started] == ["support-1"] and observed.created == 0


def test_every_room_seen_is_marked_seen_without_rewriting_unchanged_rows():
    services.room_observe(name="a", sid="RM_a", started_at=T0, num_participants=1)
    services.room_observe(name="b", sid="RM_b", started_at=T0, num_participants=1)
    Room.objects.update(last_seen_at=T0)
    now = timezone.now()
    observed = services.rooms_observe(
        seen=[
            RoomSeen(name="a", sid="RM_a", started_at=T0, num_participants=1),  # as it was
            RoomSeen(name="b", sid="RM_b", started_at=T0, num_participants=2),  # one more joined
            RoomSeen(name="c", sid="RM_c", started_at=T0, num_participants=1),  # new to the ledger
        ],
        now=now,
    )
    assert {r.name: r.last_seen_at for r in Room.objects.all()} == {"a": now, "b": now, "c": now}
    assert Room.objects.get(name="b").num_participants == 2
    assert [r.name for r in observed.started] == ["c"] and observed.created == 1
