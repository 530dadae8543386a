"""Joining with a participant token, as a browser does, and what the token's roomConfig does."""

from __future__ import annotations

from datetime import timedelta

import pytest
from livekit import api

from livekit_emulator import ControlError
from tests.real_livekit import JoinRefused

from .support import call, eventually, join, join_token, leave, participants, room, room_names, token


def _dispatches(server, room_name: str):
    return call(server, lambda lk: lk.agent_dispatch.list_dispatch(room_name))


def _participant(server, room_name: str, identity: str) -> api.ParticipantInfo:
    return call(
        server,
        lambda lk: lk.room.get_participant(api.RoomParticipantIdentity(room=room_name, identity=identity)),
    )


def test_join_creates_the_room_from_the_token_room_config(livekit_server):
    config = api.RoomConfiguration(
        empty_timeout=60,
        max_participants=4,
        metadata="from-token",
        agents=[api.RoomAgentDispatch(agent_name="triage", metadata='{"ticket": 7}')],
    )
    jwt = (
        api.AccessToken(livekit_server.api_key, livekit_server.api_secret)
        .with_identity("caller")
        .with_name("Caller")
        .with_metadata("meta")
        .with_attributes({"tier": "gold"})
        .with_grants(api.VideoGrants(room_join=True, room="support-1", can_publish=False))
        .with_room_config(config)
        .to_jwt()
    )
    assert "support-1" not in room_names(livekit_server)

    joined = join(livekit_server, jwt)

    assert (joined["identity"], joined["name"], joined["metadata"]) == ("caller", "Caller", "meta")
    assert joined["attributes"] == {"tier": "gold"}
    caller = _participant(livekit_server, "support-1", "caller")
    assert caller.permission.can_publish is False and caller.permission.can_subscribe is True
    created = room(livekit_server, "support-1")
    assert (created.empty_timeout, created.max_participants, created.metadata) == (60, 4, "from-token")
    [dispatch] = _dispatches(livekit_server, "support-1")
    assert (dispatch.agent_name, dispatch.metadata) == ("triage", '{"ticket": 7}')


def test_token_agents_are_ignored_when_the_room_already_exists(livekit_server):
    call(livekit_server, lambda lk: lk.room.create_room(api.CreateRoomRequest(name="existing")))

    join(livekit_server, join_token(livekit_server, "existing", "caller", agents=[("triage", "")]))

    assert [d.agent_name for d in _dispatches(livekit_server, "existing")] == [""]


def test_a_room_created_without_agents_gets_the_implicit_empty_dispatch(livekit_server):
    join(livekit_server, join_token(livekit_server, "plain", "caller"))

    [dispatch] = _dispatches(livekit_server, "plain")

    assert dispatch.id.startswith("AD_") and dispatch.agent_name == ""


@pytest.mark.parametrize(
    ("make_token", "message"),
    [
        (
            lambda s: token(
                s, identity="x", grants=api.VideoGrants(room_join=True, room="r"), secret="y" * 40
            ),
            "invalid token",
        ),
        (
            lambda s: token(
                s, identity="x", grants=api.VideoGrants(room_join=True, room="r"), ttl=timedelta(minutes=-5)
            ),
            "invalid token",
        ),
        (
            lambda s: token(s, identity="x", grants=api.VideoGrants(room_admin=True, room="r")),
            "permissions denied",
        ),
    ],
    ids=["bad-signature", "expired", "no-roomJoin"],
)
def test_join_is_refused_like_the_server_refuses_it(livekit_server, make_token, message):
    with pytest.raises(JoinRefused) as error:
        join(livekit_server, make_token(livekit_server))

    assert error.value.status == 401 and error.value.message.startswith(message)
    assert room_names(livekit_server) == set()


def test_a_second_session_with_the_same_identity_replaces_the_first(livekit_server):
    first = join(livekit_server, join_token(livekit_server, "dup", "alice"))
    second = join(livekit_server, join_token(livekit_server, "dup", "alice"))

    [participant] = eventually(
        lambda: len(participants(livekit_server, "dup")) == 1 and participants(livekit_server, "dup")
    )

    assert second["sid"] != first["sid"] and participant.sid == second["sid"]


def test_leave(livekit_server):
    join(livekit_server, join_token(livekit_server, "brief", "alice"))

    leave(livekit_server, "brief", "alice")

    eventually(lambda: participants(livekit_server, "brief") == [], what="alice gone")


@pytest.mark.emulator_only("the control API's leave")
def test_leaving_twice_is_not_found(livekit_server):
    livekit_server.control.join(join_token(livekit_server, "brief", "alice"))

    left = livekit_server.control.leave("brief", "alice")

    assert left["identity"] == "alice" and left["state"] == "DISCONNECTED"
    with pytest.raises(ControlError) as error:
        livekit_server.control.leave("brief", "alice")
    assert error.value.status == 404
