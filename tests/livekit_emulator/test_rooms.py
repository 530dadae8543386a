"""Rooms and participants through RoomService: ids, not_found answers, metadata, limits and
the empty/departure timeouts."""

from __future__ import annotations

import pytest
from livekit import api

from tests.real_livekit import JoinRefused

from .support import call, eventually, join, join_token, leave, participants, room_names


def test_participants_of_a_joined_room(livekit_server):
    joined = join(livekit_server, join_token(livekit_server, "standup", "alice"))

    async def scenario(lk: api.LiveKitAPI):
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room="standup"))
        alice = await lk.room.get_participant(api.RoomParticipantIdentity(room="standup", identity="alice"))
        await lk.room.remove_participant(api.RoomParticipantIdentity(room="standup", identity="alice"))
        return listed, alice

    listed, alice = call(livekit_server, scenario)

    assert joined["sid"].startswith("PA_")
    assert [p.identity for p in listed.participants] == ["alice"]
    assert alice.sid == joined["sid"] and alice.state == api.ParticipantInfo.State.ACTIVE
    assert alice.kind == api.ParticipantInfo.Kind.STANDARD and alice.permission.can_publish
    eventually(lambda: participants(livekit_server, "standup") == [], what="alice removed")


def test_unknown_participants_and_rooms(livekit_server):
    join(livekit_server, join_token(livekit_server, "known", "alice"))
    unknown = api.RoomParticipantIdentity(room="known", identity="bob")

    async def scenario(lk: api.LiveKitAPI):
        outcomes = []
        for method in (lk.room.get_participant, lk.room.remove_participant):
            try:
                await method(unknown)
            except api.TwirpError as exc:
                outcomes.append(exc.code)
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room="nowhere"))
        return outcomes, list(listed.participants)

    assert call(livekit_server, scenario) == (["not_found", "not_found"], [])


def test_update_room_metadata_and_its_size_limit(livekit_server):
    async def scenario(lk: api.LiveKitAPI):
        await lk.room.create_room(api.CreateRoomRequest(name="meta"))
        updated = await lk.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room="meta", metadata="v2")
        )
        try:
            await lk.room.update_room_metadata(
                api.UpdateRoomMetadataRequest(room="meta", metadata="x" * (512 * 1024 + 1))
            )
        except api.TwirpError as exc:
            return updated, exc
        raise AssertionError("oversized metadata accepted")

    updated, error = call(livekit_server, scenario)

    assert updated.metadata == "v2"
    assert (error.code, error.status) == ("invalid_argument", 400)
    assert error.message.startswith("metadata size exceeds limits")


def test_create_room_on_an_existing_room_returns_it_unchanged(livekit_server):
    async def scenario(lk: api.LiveKitAPI):
        first = await lk.room.create_room(api.CreateRoomRequest(name="again", empty_timeout=30))
        second = await lk.room.create_room(api.CreateRoomRequest(name="again", max_participants=5))
        return first, second

    first, second = call(livekit_server, scenario)

    assert second.sid == first.sid
    assert (second.empty_timeout, second.max_participants) == (30, 0)
    [listed] = call(
        livekit_server, lambda lk: lk.room.list_rooms(api.ListRoomsRequest(names=["again"]))
    ).rooms
    assert (listed.empty_timeout, listed.max_participants) == (30, 0)


def test_max_participants_refuses_one_more(livekit_server):
    call(
        livekit_server,
        lambda lk: lk.room.create_room(api.CreateRoomRequest(name="small", max_participants=1)),
    )
    join(livekit_server, join_token(livekit_server, "small", "alice"))

    with pytest.raises(JoinRefused) as error:
        join(livekit_server, join_token(livekit_server, "small", "bob"))

    # The WebSocket handshake is refused with a 500 (the SDK retries it three times).
    assert error.value.status == 500 and error.value.message == "room has exceeded its max participants"
    assert [p.identity for p in participants(livekit_server, "small")] == ["alice"]


def test_delete_room_disconnects_everyone(livekit_server):
    join(livekit_server, join_token(livekit_server, "doomed", "alice"))

    call(livekit_server, lambda lk: lk.room.delete_room(api.DeleteRoomRequest(room="doomed")))

    assert "doomed" not in room_names(livekit_server)
    assert participants(livekit_server, "doomed") == []


def test_empty_timeout_closes_a_room_nobody_joined(livekit_server):
    call(
        livekit_server, lambda lk: lk.room.create_room(api.CreateRoomRequest(name="unused", empty_timeout=1))
    )
    assert "unused" in room_names(livekit_server)

    eventually(lambda: "unused" not in room_names(livekit_server), timeout=5)


def test_departure_timeout_closes_a_room_after_the_last_person_leaves(livekit_server):
    call(
        livekit_server,
        lambda lk: lk.room.create_room(api.CreateRoomRequest(name="meeting", departure_timeout=1)),
    )
    join(livekit_server, join_token(livekit_server, "meeting", "alice"))
    join(livekit_server, join_token(livekit_server, "meeting", "bob"))
    leave(livekit_server, "meeting", "alice")
    eventually(lambda: [p.identity for p in participants(livekit_server, "meeting")] == ["bob"])
    assert "meeting" in room_names(livekit_server)  # bob is still there

    leave(livekit_server, "meeting", "bob")

    eventually(lambda: "meeting" not in room_names(livekit_server), timeout=5)


@pytest.mark.emulator_only("a simulated automatic worker and fractional timeouts (control API)")
def test_an_automatic_agent_does_not_keep_a_room_open(livekit_server):
    # The control API takes fractional seconds, so this test does not wait a whole second.
    livekit_server.control.create_rooms(
        [{"name": "meeting", "departure_timeout": 0.2, "participants": [{"identity": "alice"}]}]
    )
    livekit_server.control.add_worker("")  # an automatic agent: it must not keep the room open
    livekit_server.control.leave("meeting", "alice")

    eventually(lambda: "meeting" not in room_names(livekit_server), timeout=3)


def test_update_participant(livekit_server):
    join(livekit_server, join_token(livekit_server, "edit", "alice"))
    request = api.UpdateParticipantRequest(
        room="edit",
        identity="alice",
        name="Alice",
        metadata="m",
        attributes={"role": "host"},
        permission=api.ParticipantPermission(can_subscribe=True, can_publish=False),
    )

    updated = call(livekit_server, lambda lk: lk.room.update_participant(request))

    assert (updated.name, updated.metadata, dict(updated.attributes)) == ("Alice", "m", {"role": "host"})
    assert updated.permission.can_subscribe and not updated.permission.can_publish
