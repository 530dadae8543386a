"""Joining with a participant token, as a browser does, and what the token's roomConfig does."""

from __future__ import annotations

from datetime import timedelta

import pytest
from livekit import api

from livekit_emulator import ControlError

from .support import call, join_token, token


def _dispatches(server, room: str):
    return call(server, lambda lk: lk.agent_dispatch.list_dispatch(room))


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

    joined = livekit_server.control.join(jwt)

    assert joined["room_created"] is True
    assert (joined["identity"], joined["name"], joined["metadata"]) == ("caller", "Caller", "meta")
    assert joined["attributes"] == {"tier": "gold"} and joined["permission"]["can_publish"] is False
    room = livekit_server.control.state(room="support-1")["rooms"][0]
    assert (room["empty_timeout"], room["max_participants"], room["metadata"]) == (60, 4, "from-token")
    [dispatch] = _dispatches(livekit_server, "support-1")
    assert (dispatch.agent_name, dispatch.metadata) == ("triage", '{"ticket": 7}')


def test_token_agents_are_ignored_when_the_room_already_exists(livekit_server):
    call(livekit_server, lambda lk: lk.room.create_room(api.CreateRoomRequest(name="existing")))

    joined = livekit_server.control.join(
        join_token(livekit_server, "existing", "caller", agents=[("triage", "")])
    )

    assert joined["room_created"] is False
    assert [d.agent_name for d in _dispatches(livekit_server, "existing")] == [""]


def test_a_room_created_without_agents_gets_the_implicit_empty_dispatch(livekit_server):
    livekit_server.control.join(join_token(livekit_server, "plain", "caller"))

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
    with pytest.raises(ControlError) as error:
        livekit_server.control.join(make_token(livekit_server))

    assert error.value.status == 401 and error.value.body["error"].startswith(message)
    assert livekit_server.control.state()["rooms"] == []


def test_a_second_session_with_the_same_identity_replaces_the_first(livekit_server):
    first = livekit_server.control.join(join_token(livekit_server, "dup", "alice"))
    second = livekit_server.control.join(join_token(livekit_server, "dup", "alice"))

    [participant] = livekit_server.control.state(room="dup")["rooms"][0]["participants"]

    assert second["sid"] != first["sid"] and participant["sid"] == second["sid"]


def test_leave(livekit_server):
    livekit_server.control.join(join_token(livekit_server, "brief", "alice"))

    left = livekit_server.control.leave("brief", "alice")

    assert left["identity"] == "alice" and left["state"] == "DISCONNECTED"
    with pytest.raises(ControlError) as error:
        livekit_server.control.leave("brief", "alice")
    assert error.value.status == 404
