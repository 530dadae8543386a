"""LiveKit's auth middleware and the grant each method needs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from livekit import api

from .support import call_with_token, http, token

LIST_ROOMS = "/twirp/livekit.RoomService/ListRooms"


def _list_rooms_with(server, jwt: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {jwt}", "Content-Type": "application/protobuf"}
    return http("POST", server.url + LIST_ROOMS, b"", headers)


def test_wrong_signature_gets_401_plain_text(livekit_server):
    forged = token(livekit_server, grants=api.VideoGrants(room_list=True), secret="x" * 40)

    status, headers, body = _list_rooms_with(livekit_server, forged)

    assert status == 401
    assert headers["Content-Type"].startswith("text/plain")
    assert body.startswith(b"invalid token")


def test_expired_token_gets_401(livekit_server):
    expired = token(livekit_server, grants=api.VideoGrants(room_list=True), ttl=timedelta(minutes=-5))

    status, _, body = _list_rooms_with(livekit_server, expired)

    assert status == 401 and b"expired" in body.lower()


def test_unknown_api_key_gets_401(livekit_server):
    stranger = token(livekit_server, grants=api.VideoGrants(room_list=True), key="someone-else")

    status, _, body = _list_rooms_with(livekit_server, stranger)

    assert (status, body) == (401, b"invalid API key: someone-else")


def test_the_client_sees_a_401_as_a_twirp_error(livekit_server):
    forged = token(livekit_server, grants=api.VideoGrants(room_list=True), secret="x" * 40)

    with pytest.raises(api.TwirpError) as error:
        call_with_token(livekit_server, forged, lambda lk: lk.room.list_rooms(api.ListRoomsRequest()))

    assert error.value.status == 401


# Each method with a token holding every grant except the one it needs.
ALL_BUT = {
    "roomCreate": api.VideoGrants(room_list=True, room_admin=True, room="r"),
    "roomList": api.VideoGrants(room_create=True, room_admin=True, room="r"),
    "roomAdmin": api.VideoGrants(room_create=True, room_list=True, room="r"),
}
CALLS = [
    ("roomCreate", lambda lk: lk.room.create_room(api.CreateRoomRequest(name="r"))),
    ("roomCreate", lambda lk: lk.room.delete_room(api.DeleteRoomRequest(room="r"))),
    ("roomList", lambda lk: lk.room.list_rooms(api.ListRoomsRequest())),
    ("roomAdmin", lambda lk: lk.room.list_participants(api.ListParticipantsRequest(room="r"))),
    ("roomAdmin", lambda lk: lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="r"))),
    ("roomAdmin", lambda lk: lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(room="r"))),
    ("roomAdmin", lambda lk: lk.agent_dispatch.list_dispatch("r")),
]


@pytest.mark.parametrize(("grant", "method"), CALLS)
def test_a_missing_grant_is_unauthenticated_permissions_denied(livekit_server, grant, method):
    jwt = token(livekit_server, grants=ALL_BUT[grant])

    with pytest.raises(api.TwirpError) as error:
        call_with_token(livekit_server, jwt, method)

    assert (error.value.code, error.value.message, error.value.status) == (
        "unauthenticated",
        "permissions denied",
        401,
    )


def test_room_admin_only_covers_its_own_room(livekit_server):
    jwt = token(livekit_server, grants=api.VideoGrants(room_admin=True, room="room-a"))

    mine = call_with_token(
        livekit_server, jwt, lambda lk: lk.room.list_participants(api.ListParticipantsRequest(room="room-a"))
    )
    assert list(mine.participants) == []
    with pytest.raises(api.TwirpError) as error:
        call_with_token(livekit_server, jwt, lambda lk: lk.agent_dispatch.list_dispatch("room-b"))
    assert error.value.code == "unauthenticated"
