"""The Twirp API: LiveKit's RoomService and AgentDispatchService over HTTP, in protobuf or
JSON, with Twirp's routing errors and error bodies, LiveKit's auth middleware (401 plain text)
and the grant check each method makes before it touches the emulator's state. Egress, Ingress
and SIP answer as a real single-node server without Redis does: "not connected"."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import agent_dispatch, egress, ingress, sip
from livekit.protocol import room as room_pb

from . import auth, protos
from .models import NO_RESPONSE, UNKNOWN, EmulatorError, check_metadata
from .state import Emulator

PREFIX = "/twirp/"

# Twirp's error code to HTTP status table.
STATUS = {
    "canceled": 408,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unknown": 500,
    "unavailable": 503,
    "dataloss": 500,
}

# Exact header values, as Twirp's Go server sends them (aiohttp would append a charset).
_JSON = {"Content-Type": "application/json"}
_PROTOBUF = {"Content-Type": "application/protobuf"}

_SERVICES = {
    "livekit.RoomService": room_pb.DESCRIPTOR.services_by_name["RoomService"],
    "livekit.AgentDispatchService": agent_dispatch.DESCRIPTOR.services_by_name["AgentDispatchService"],
}
# Services a single-node livekit-server without Redis serves only to say it cannot: every call
# that passes the grant check is a 500 `internal` "<what> not connected (redis required)".
_UNCONNECTED = {
    "livekit.Egress": (egress.DESCRIPTOR.services_by_name["Egress"], "egress", "roomRecord"),
    "livekit.Ingress": (ingress.DESCRIPTOR.services_by_name["Ingress"], "ingress", "ingressAdmin"),
    "livekit.SIP": (sip.DESCRIPTOR.services_by_name["SIP"], "sip", None),
}
# How long the real server waits for the node of a room or participant that does not exist
# before it answers 503 "no response from servers".
NO_RESPONSE_AFTER = 3.0


def error_response(
    code: str, message: str, meta: dict[str, str] | None = None, status: int | None = None
) -> web.Response:
    body: dict[str, Any] = {"code": code, "msg": message}
    if meta:
        body["meta"] = meta
    return web.Response(status=status or STATUS.get(code, 500), body=json.dumps(body).encode(), headers=_JSON)


@dataclass(slots=True)
class Call:
    """What a method sees of its HTTP request besides the decoded message."""

    claims: auth.Claims | None
    request_id: str
    received_at: float


Handler = Callable[[Any, Call], Message]


class TwirpAPI:
    def __init__(
        self, emulator: Emulator, keys: auth.KeyRing, *, no_response_after: float = NO_RESPONSE_AFTER
    ) -> None:
        self.emulator = emulator
        self.keys = keys
        self.no_response_after = no_response_after
        self.methods: dict[str, tuple[type[Message], Handler]] = {
            "livekit.RoomService/CreateRoom": (room_pb.CreateRoomRequest, self.create_room),
            "livekit.RoomService/ListRooms": (room_pb.ListRoomsRequest, self.list_rooms),
            "livekit.RoomService/DeleteRoom": (room_pb.DeleteRoomRequest, self.delete_room),
            "livekit.RoomService/ListParticipants": (room_pb.ListParticipantsRequest, self.list_participants),
            "livekit.RoomService/GetParticipant": (room_pb.RoomParticipantIdentity, self.get_participant),
            "livekit.RoomService/RemoveParticipant": (
                room_pb.RoomParticipantIdentity,
                self.remove_participant,
            ),
            "livekit.RoomService/UpdateParticipant": (
                room_pb.UpdateParticipantRequest,
                self.update_participant,
            ),
            "livekit.RoomService/UpdateRoomMetadata": (
                room_pb.UpdateRoomMetadataRequest,
                self.update_room_metadata,
            ),
            "livekit.RoomService/SendData": (room_pb.SendDataRequest, self.send_data),
            "livekit.RoomService/MutePublishedTrack": (room_pb.MuteRoomTrackRequest, self.participant_rpc),
            "livekit.RoomService/UpdateSubscriptions": (
                room_pb.UpdateSubscriptionsRequest,
                self.participant_rpc,
            ),
            "livekit.RoomService/MoveParticipant": (room_pb.MoveParticipantRequest, self.move_participant),
            "livekit.AgentDispatchService/CreateDispatch": (
                agent_dispatch.CreateAgentDispatchRequest,
                self.create_dispatch,
            ),
            "livekit.AgentDispatchService/DeleteDispatch": (
                agent_dispatch.DeleteAgentDispatchRequest,
                self.delete_dispatch,
            ),
            "livekit.AgentDispatchService/ListDispatch": (
                agent_dispatch.ListAgentDispatchRequest,
                self.list_dispatch,
            ),
        }

    async def handle(self, request: web.Request) -> web.Response:
        received_at = time.time()
        # LiveKit's auth middleware runs before Twirp routing, so a bad token wins over a bad route.
        try:
            claims = self.keys.verify_header(request.headers.get("Authorization"))
        except auth.AuthError as exc:
            return web.Response(status=401, text=str(exc))

        route = request.path[len(PREFIX) :]
        if request.method != "POST":
            return self._bad_route(request, f'unsupported method "{request.method}" (only POST is allowed)')
        service, _, method = route.partition("/")
        if service in _UNCONNECTED and method in _UNCONNECTED[service][0].methods_by_name:
            return self._unconnected(service, claims)
        if route not in self.methods:
            known = _SERVICES.get(service)
            if known is not None and method in known.methods_by_name:
                return error_response("unimplemented", f"{method} is not implemented by livekit_emulator")
            return self._bad_route(request, f'no handler for path "{request.path}"')

        content_type = request.content_type.lower()
        if content_type not in ("application/protobuf", "application/json"):
            header = request.headers.get("Content-Type", "")
            return self._bad_route(request, f'unexpected Content-Type: "{header}"')

        message_class, handler = self.methods[route]
        body = await request.read()
        try:
            if content_type == "application/json":
                message = json_format.Parse(body or b"{}", message_class(), ignore_unknown_fields=True)
            else:
                message = message_class.FromString(body)
        except (DecodeError, json_format.ParseError, UnicodeDecodeError):
            kind = "json " if content_type == "application/json" else ""
            return error_response("malformed", f"the {kind}request could not be decoded")

        self.emulator.requests[route] += 1
        call = Call(claims, request.headers.get("X-Livekit-Request-Id", ""), received_at)
        try:
            answer = handler(message, call)
        except auth.PermissionDenied as exc:
            return error_response("unauthenticated", str(exc))
        except EmulatorError as exc:
            if exc.message == NO_RESPONSE:
                # The real server waits for the room's node before it gives up.
                await asyncio.sleep(self.no_response_after)
            return error_response(exc.code, exc.message, exc.meta)

        if content_type == "application/json":
            # Twirp's Go server emits proto field names with defaults included.
            text = json_format.MessageToJson(
                answer,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
                indent=None,
            )
            return web.Response(body=text.encode(), headers=_JSON)
        return web.Response(body=answer.SerializeToString(), headers=_PROTOBUF)

    @staticmethod
    def _unconnected(service: str, claims: auth.Claims | None) -> web.Response:
        _, what, grant = _UNCONNECTED[service]
        try:
            if grant is None:
                auth.ensure_sip_admin(claims)
            else:
                auth.ensure_video_grant(claims, grant)
        except auth.PermissionDenied as exc:
            return error_response("unauthenticated", str(exc))
        return error_response("internal", f"{UNKNOWN}{what} not connected (redis required)")

    @staticmethod
    def _bad_route(request: web.Request, message: str) -> web.Response:
        return error_response(
            "bad_route", message, {"twirp_invalid_route": f"{request.method} {request.path}"}
        )

    # -- RoomService ---------------------------------------------------------------------

    def create_room(self, req: room_pb.CreateRoomRequest, call: Call) -> Message:
        auth.ensure_create(call.claims)
        config = protos.room_config(req)
        check_metadata(config.metadata)
        # An existing room comes back as it is: LiveKit applies none of the new settings.
        room, _ = self.emulator.get_or_create_room(req.name, config)
        return protos.room_proto(room)

    def list_rooms(self, req: room_pb.ListRoomsRequest, call: Call) -> Message:
        auth.ensure_list(call.claims)
        rooms = self.emulator.rooms
        selected = [rooms[n] for n in req.names if n in rooms] if req.names else rooms.values()
        return room_pb.ListRoomsResponse(rooms=[protos.room_proto(r) for r in selected])

    def delete_room(self, req: room_pb.DeleteRoomRequest, call: Call) -> Message:
        auth.ensure_create(call.claims)
        self.emulator.delete_room(req.room)
        return room_pb.DeleteRoomResponse()

    def list_participants(self, req: room_pb.ListParticipantsRequest, call: Call) -> Message:
        auth.ensure_admin(call.claims, req.room)
        participants = self.emulator.participants(req.room)
        return room_pb.ListParticipantsResponse(
            participants=[protos.participant_proto(p) for p in participants]
        )

    def get_participant(self, req: room_pb.RoomParticipantIdentity, call: Call) -> Message:
        auth.ensure_admin(call.claims, req.room)
        return protos.participant_proto(self.emulator.participant(req.room, req.identity))

    def remove_participant(self, req: room_pb.RoomParticipantIdentity, call: Call) -> Message:
        auth.ensure_admin(call.claims, req.room)
        self.emulator.remove_participant(req.room, req.identity)
        return room_pb.RemoveParticipantResponse()

    def update_participant(self, req: room_pb.UpdateParticipantRequest, call: Call) -> Message:
        auth.ensure_admin(call.claims, req.room)
        permission = None
        if req.HasField("permission"):
            # Every flag, false ones included: proto3 does not mark a false bool as set.
            fields = req.permission.DESCRIPTOR.fields
            permission = {f.name: getattr(req.permission, f.name) for f in fields if f.type == f.TYPE_BOOL}
        participant = self.emulator.update_participant(
            req.room,
            req.identity,
            name=req.name,
            metadata=req.metadata,
            attributes=dict(req.attributes),
            permission=permission,
        )
        return protos.participant_proto(participant)

    def update_room_metadata(self, req: room_pb.UpdateRoomMetadataRequest, call: Call) -> Message:
        auth.ensure_admin(call.claims, req.room)
        return protos.room_proto(self.emulator.update_room_metadata(req.room, req.metadata))

    def send_data(self, req: room_pb.SendDataRequest, call: Call) -> Message:
        # Nobody receives data in a stand-in; only the checks remain.
        auth.ensure_admin(call.claims, req.room)
        if req.room not in self.emulator.rooms:
            raise EmulatorError("unavailable", NO_RESPONSE)
        return room_pb.SendDataResponse()

    def participant_rpc(self, req: Any, call: Call) -> Message:
        """MutePublishedTrack and UpdateSubscriptions: the real server forwards them to the
        participant's node; nobody answers for a participant it does not have. The emulator has
        no tracks, so for a participant it does have they stay unimplemented."""
        auth.ensure_admin(call.claims, req.room)
        self._participant_or_no_response(req.room, req.identity)
        method = (
            "MutePublishedTrack" if isinstance(req, room_pb.MuteRoomTrackRequest) else "UpdateSubscriptions"
        )
        raise EmulatorError("unimplemented", f"{method} is not implemented by livekit_emulator (no tracks)")

    def move_participant(self, req: room_pb.MoveParticipantRequest, call: Call) -> Message:
        auth.ensure_admin(call.claims, req.room)
        if call.claims is None or call.claims.video.get("destinationRoom") != req.destination_room:
            raise auth.PermissionDenied()
        self._participant_or_no_response(req.room, req.identity)
        raise EmulatorError("unimplemented", "MoveParticipant is not implemented by livekit_emulator")

    def _participant_or_no_response(self, room: str, identity: str) -> None:
        room_state = self.emulator.rooms.get(room)
        if room_state is None or identity not in room_state.participants:
            raise EmulatorError("unavailable", NO_RESPONSE)

    # -- AgentDispatchService ------------------------------------------------------------

    def create_dispatch(self, req: agent_dispatch.CreateAgentDispatchRequest, call: Call) -> Message:
        auth.ensure_admin(call.claims, req.room)
        dispatch = self.emulator.create_dispatch(
            req.room,
            req.agent_name,
            req.metadata,
            deployment=req.deployment,
            request_id=call.request_id,
            received_at=call.received_at,
        )
        return protos.dispatch_proto(dispatch, self.emulator.rooms.get(req.room))

    def delete_dispatch(self, req: agent_dispatch.DeleteAgentDispatchRequest, call: Call) -> Message:
        auth.ensure_admin(call.claims, req.room)
        if req.room not in self.emulator.rooms:
            raise EmulatorError("unavailable", NO_RESPONSE)
        dispatch = self.emulator.delete_dispatch(req.room, req.dispatch_id)
        # As the real server: the dispatch as it stood, without a deleted_at.
        return protos.dispatch_proto(dispatch, self.emulator.rooms.get(req.room))

    def list_dispatch(self, req: agent_dispatch.ListAgentDispatchRequest, call: Call) -> Message:
        auth.ensure_admin(call.claims, req.room)
        room = self.emulator.rooms.get(req.room)
        if room is None:
            raise EmulatorError("unavailable", NO_RESPONSE)
        dispatches = self.emulator.dispatches(req.room, req.dispatch_id)
        return agent_dispatch.ListAgentDispatchResponse(
            agent_dispatches=[protos.dispatch_proto(d, room) for d in dispatches]
        )
