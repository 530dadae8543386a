"""Answers the emulator once got wrong, pinned against livekit-server v1.13.5 (issue 20): calls
for rooms or participants the server does not have, services a single node without Redis
cannot serve, the exact not-found and 401 wording, CreateRoom with an empty name, and the room
fields a client sees (enabled codecs, TURN password)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import jwt as pyjwt
import pytest
from livekit import api

from .support import call, http, join, join_token, token

NO_RESPONSE = {"code": "unavailable", "msg": "twirp error unknown: no response from servers"}
# The real server waits 3 s for the room's node; the emulator's tests shorten that wait.
REAL_NO_RESPONSE_AFTER = 3.0


def _post(server, path: str, body: dict, grants: api.VideoGrants | None = None, jwt: str | None = None):
    jwt = jwt or token(server, grants=grants)
    headers = {"Authorization": f"Bearer {jwt}", "Content-Type": "application/json"}
    started = time.monotonic()
    status, _, raw = http("POST", f"{server.url}/twirp/{path}", json.dumps(body).encode(), headers)
    return status, raw.decode(), time.monotonic() - started


def _waited_long_enough(server, elapsed: float) -> bool:
    expected = getattr(server, "no_response_after", REAL_NO_RESPONSE_AFTER)
    return expected * 0.8 <= elapsed < expected + 2


def _admin(room: str, **more) -> api.VideoGrants:
    return api.VideoGrants(room_admin=True, room=room, **more)


@pytest.mark.parametrize(
    "path, body",
    [
        ("livekit.AgentDispatchService/ListDispatch", {"room": "nowhere"}),
        ("livekit.AgentDispatchService/DeleteDispatch", {"room": "nowhere", "dispatch_id": "AD_x"}),
        ("livekit.RoomService/SendData", {"room": "nowhere", "data": ""}),
    ],
    ids=["ListDispatch", "DeleteDispatch", "SendData"],
)
def test_a_call_for_a_room_the_server_does_not_have_waits_then_answers_503(livekit_server, path, body):
    status, raw, elapsed = _post(livekit_server, path, body, _admin("nowhere"))

    assert (status, json.loads(raw)) == (503, NO_RESPONSE)
    assert _waited_long_enough(livekit_server, elapsed), elapsed


def test_the_client_sees_the_503_as_a_twirp_error(livekit_server):
    with pytest.raises(api.TwirpError) as error:
        call(livekit_server, lambda lk: lk.agent_dispatch.list_dispatch("nowhere"))

    assert (error.value.status, error.value.code) == (503, "unavailable")


@pytest.mark.parametrize(
    "method, body, grants",
    [
        (
            "MutePublishedTrack",
            {"room": "here", "identity": "ghost", "track_sid": "TR_x", "muted": True},
            _admin("here"),
        ),
        (
            "UpdateSubscriptions",
            {"room": "here", "identity": "ghost", "track_sids": ["TR_x"], "subscribe": True},
            _admin("here"),
        ),
        (
            "MoveParticipant",
            {"room": "here", "identity": "ghost", "destination_room": "there"},
            _admin("here", destination_room="there"),
        ),
    ],
)
def test_a_participant_call_for_an_unknown_participant_waits_then_answers_503(
    livekit_server, method, body, grants
):
    join(livekit_server, join_token(livekit_server, "here", "someone"))

    status, raw, elapsed = _post(livekit_server, f"livekit.RoomService/{method}", body, grants)

    assert (status, json.loads(raw)) == (503, NO_RESPONSE)
    assert _waited_long_enough(livekit_server, elapsed), elapsed


@pytest.mark.parametrize(
    "path, what",
    [
        ("livekit.Egress/ListEgress", "egress"),
        ("livekit.Ingress/ListIngress", "ingress"),
        ("livekit.SIP/ListSIPInboundTrunk", "sip"),
        ("livekit.SIP/ListSIPOutboundTrunk", "sip"),
        ("livekit.SIP/ListSIPDispatchRule", "sip"),
    ],
)
def test_egress_ingress_and_sip_are_not_connected_without_redis(livekit_server, path, what):
    everything = (
        api.AccessToken(livekit_server.api_key, livekit_server.api_secret)
        .with_grants(api.VideoGrants(room_record=True, ingress_admin=True))
        .with_sip_grants(api.SIPGrants(admin=True))
        .to_jwt()
    )
    nothing = token(livekit_server, grants=api.VideoGrants(room_list=True))

    allowed = _post(livekit_server, path, {}, jwt=everything)
    refused = _post(livekit_server, path, {}, jwt=nothing)

    expected = {"code": "internal", "msg": f"twirp error unknown: {what} not connected (redis required)"}
    assert (allowed[0], json.loads(allowed[1])) == (500, expected)
    assert (refused[0], json.loads(refused[1])) == (
        401,
        {"code": "unauthenticated", "msg": "permissions denied"},
    )


def test_not_found_messages_carry_the_real_prefix(livekit_server):
    join(livekit_server, join_token(livekit_server, "here", "someone"))
    room_gone = {"code": "not_found", "msg": "twirp error unknown: requested room does not exist"}
    nobody = {"code": "not_found", "msg": "twirp error unknown: participant does not exist"}
    cases = [
        (
            "RoomService/UpdateRoomMetadata",
            {"room": "nowhere", "metadata": "x"},
            _admin("nowhere"),
            room_gone,
        ),
        ("RoomService/DeleteRoom", {"room": "nowhere"}, api.VideoGrants(room_create=True), room_gone),
        ("RoomService/GetParticipant", {"room": "here", "identity": "ghost"}, _admin("here"), nobody),
        (
            "RoomService/UpdateParticipant",
            {"room": "here", "identity": "ghost", "metadata": "x"},
            _admin("here"),
            nobody,
        ),
        ("RoomService/RemoveParticipant", {"room": "here", "identity": "ghost"}, _admin("here"), nobody),
        (
            "RoomService/RemoveParticipant",
            {"room": "nowhere", "identity": "ghost"},
            _admin("nowhere"),
            nobody,
        ),
    ]

    answers = [_post(livekit_server, f"livekit.{path}", body, grants)[:2] for path, body, grants, _ in cases]

    assert [(status, json.loads(raw)) for status, raw in answers] == [(404, want) for *_, want in cases]


def test_create_room_with_an_empty_name_creates_a_room_named_empty(livekit_server):
    room = call(livekit_server, lambda lk: lk.room.create_room(api.CreateRoomRequest(name="")))
    listed = call(livekit_server, lambda lk: lk.room.list_rooms(api.ListRoomsRequest()))

    assert room.name == "" and room.sid.startswith("RM_")
    assert [r.sid for r in listed.rooms if r.name == ""] == [room.sid]


def test_a_room_shows_the_enabled_codecs_and_a_turn_password(livekit_server):
    first = call(livekit_server, lambda lk: lk.room.create_room(api.CreateRoomRequest(name="one")))
    second = call(livekit_server, lambda lk: lk.room.create_room(api.CreateRoomRequest(name="two")))

    assert [c.mime for c in first.enabled_codecs] == [
        "audio/PCMU",
        "audio/PCMA",
        "audio/opus",
        "audio/red",
        "video/VP8",
        "video/H264",
        "video/VP9",
        "video/AV1",
        "video/H265",
        "video/rtx",
    ]
    assert len(first.turn_password) >= 40 and first.turn_password.isalnum()
    assert first.turn_password != second.turn_password


def _list_rooms_with(server, jwt: str) -> tuple[int, str]:
    status, raw, _ = _post(server, "livekit.RoomService/ListRooms", {}, jwt=jwt)
    return status, raw


def test_401_bodies_echo_the_token_with_the_real_wording(livekit_server):
    grants = api.VideoGrants(room_list=True)
    forged = token(livekit_server, grants=grants, secret="x" * 40)
    expired = token(livekit_server, grants=grants, ttl=timedelta(minutes=-5))
    now = int(time.time())
    hs384 = pyjwt.encode(
        {"iss": livekit_server.api_key, "exp": now + 600, "video": {"roomList": True}},
        livekit_server.api_secret + "-padded-to-48-bytes-for-hs384",
        algorithm="HS384",
    )
    early = pyjwt.encode(
        {"iss": livekit_server.api_key, "nbf": now + 600, "exp": now + 1200, "video": {"roomList": True}},
        livekit_server.api_secret,
        algorithm="HS256",
    )

    answers = [_list_rooms_with(livekit_server, jwt) for jwt in (forged, expired, hs384, early)]

    assert answers == [
        (401, f"invalid token: {forged}, error: token signature is invalid: signature is invalid"),
        (401, f"invalid token: {expired}, error: token has invalid claims: token is expired"),
        (401, f"invalid token: {hs384}, error: token signature is invalid: signing method HS384 is invalid"),
        (401, f"invalid token: {early}, error: token has invalid claims: token is not valid yet"),
    ]
