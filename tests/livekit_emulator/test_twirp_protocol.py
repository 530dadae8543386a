"""The Twirp wire protocol: protobuf and JSON bodies, routing errors, error bodies."""

from __future__ import annotations

import json

import pytest
from livekit import api

from .support import call, http, token


def _admin_headers(server, content_type: str = "application/json") -> dict[str, str]:
    grants = api.VideoGrants(room_create=True, room_list=True)
    return {"Authorization": f"Bearer {token(server, grants=grants)}", "Content-Type": content_type}


def test_protobuf_create_and_list_rooms(livekit_server):
    async def scenario(lk: api.LiveKitAPI):
        created = await lk.room.create_room(api.CreateRoomRequest(name="lobby", metadata="m"))
        listed = await lk.room.list_rooms(api.ListRoomsRequest(names=["lobby", "absent"]))
        return created, listed

    created, listed = call(livekit_server, scenario)

    assert created.sid.startswith("RM_") and len(created.sid) == 15
    assert created.creation_time > 0 and created.creation_time_ms // 1000 == created.creation_time
    assert (created.empty_timeout, created.departure_timeout) == (300, 20)
    assert [r.sid for r in listed.rooms] == [created.sid]


def test_json_uses_proto_field_names_with_defaults(livekit_server):
    url = livekit_server.url + "/twirp/livekit.RoomService/CreateRoom"
    status, headers, body = http(
        "POST", url, b'{"name": "json-room", "emptyTimeout": 7}', _admin_headers(livekit_server)
    )

    assert status == 200 and headers["Content-Type"] == "application/json"
    room = json.loads(body)
    assert room["name"] == "json-room" and room["empty_timeout"] == 7
    assert room["num_participants"] == 0  # defaults included
    assert isinstance(room["creation_time"], str)  # int64 as a string, as protojson does


def test_unknown_method_is_bad_route(livekit_server):
    url = livekit_server.url + "/twirp/livekit.RoomService/NoSuchMethod"
    status, _, body = http("POST", url, b"{}", _admin_headers(livekit_server))

    assert status == 404
    error = json.loads(body)
    assert error["code"] == "bad_route"
    assert error["meta"]["twirp_invalid_route"] == "POST /twirp/livekit.RoomService/NoSuchMethod"


def test_get_is_bad_route(livekit_server):
    status, _, body = http("GET", livekit_server.url + "/twirp/livekit.RoomService/ListRooms")

    assert status == 404 and json.loads(body)["code"] == "bad_route"


def test_unexpected_content_type_is_bad_route(livekit_server):
    url = livekit_server.url + "/twirp/livekit.RoomService/ListRooms"
    status, _, body = http("POST", url, b"{}", _admin_headers(livekit_server, "text/plain"))

    assert status == 404 and json.loads(body)["code"] == "bad_route"


@pytest.mark.parametrize(
    ("content_type", "body"), [("application/json", b"{not json"), ("application/protobuf", b"\xff\xff")]
)
def test_undecodable_body_is_malformed(livekit_server, content_type, body):
    url = livekit_server.url + "/twirp/livekit.RoomService/ListRooms"
    status, _, answer = http("POST", url, body, _admin_headers(livekit_server, content_type))

    assert status == 400 and json.loads(answer)["code"] == "malformed"


def test_errors_reach_the_client_as_twirp_errors(livekit_server):
    async def scenario(lk: api.LiveKitAPI):
        await lk.room.delete_room(api.DeleteRoomRequest(room="never-created"))

    with pytest.raises(api.TwirpError) as error:
        call(livekit_server, scenario)

    assert (error.value.code, error.value.status) == ("not_found", 404)
