"""The participant signal connection, `/rtc`: real LiveKit clients (the Python rtc SDK, a
livekit-agents job, livekit-client in a browser) join a room here, see the other participants
(agents included) come and go, and leave, as on livekit-server (pkg/service/rtcservice.go,
pkg/rtc/room.go). There is no media: see README.md "Participants over /rtc".

The protocol is `livekit.protocol.rtc` SignalRequest / SignalResponse in binary frames. The
server answers with a JoinResponse that makes the client's *publisher* peer connection its
primary one (`subscriber_primary` false, as livekit-server does for a participant that cannot
subscribe), so the client sends the only offer: aiortc answers it as the server's side of the
connection (ICE on the emulator's own address, DTLS, the client's data channels). Track
publications are refused with RequestResponse NOT_ALLOWED; the server never offers the
subscriber connection, so nobody receives media.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

import aioice.ice
from aiohttp import WSMsgType, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc
from livekit.protocol.room import RoomConfiguration

from . import auth, protos
from .agents import SERVER_VERSION, SIGNAL_PROTOCOL, send_until_closed
from .models import DisconnectReason, EmulatorError, Participant, ParticipantKind, Room

if TYPE_CHECKING:
    from .server import EmulatorServer

logger = logging.getLogger("livekit_emulator")

# livekit-server's PingIntervalSeconds and PingTimeoutSeconds (pkg/rtc/room.go).
PING_INTERVAL = 5
PING_TIMEOUT = 15
# What a client is told when it asks to publish a track.
NO_MEDIA = "livekit_emulator has no media server: publishing tracks is not emulated"
# The /rtc/v1 path (a single peer connection) is answered as a server without it answers:
# 404, on which the rtc SDK and livekit-client fall back to /rtc.
NO_SINGLE_PC = "livekit_emulator serves the two-connection /rtc path only"
NO_RESUME = "livekit_emulator cannot resume a signal connection: reconnect with a new join"

# The token's `kind` claim.
TOKEN_KINDS = {
    "standard": ParticipantKind.STANDARD,
    "ingress": ParticipantKind.INGRESS,
    "egress": ParticipantKind.EGRESS,
    "sip": ParticipantKind.SIP,
    "agent": ParticipantKind.AGENT,
}


class BadRoomConfig(Exception):
    """A token whose roomConfig claim does not parse: 401, as LiveKit refuses such a token."""


def token_join(server: EmulatorServer, claims: auth.Claims) -> tuple[Participant, bool]:
    """Join the token's room as its participant, as LiveKit's /rtc does after the token checks:
    the room (created from the token's roomConfig if this join creates it), the identity,
    name, metadata, attributes, kind and grants. Raises EmulatorError from the state."""
    room_name = auth.ensure_join(claims)
    config = None
    if claims.room_config:
        try:
            parsed = json_format.ParseDict(
                claims.room_config, RoomConfiguration(), ignore_unknown_fields=True
            )
        except json_format.ParseError as exc:
            raise BadRoomConfig(f"invalid token: error: bad roomConfig: {exc}") from exc
        config = protos.room_config(parsed)
    video = claims.video
    return server.emulator.join(
        room_name,
        claims.identity,
        name=claims.name,
        metadata=claims.metadata,
        attributes=claims.attributes,
        kind=TOKEN_KINDS.get(claims.kind, ParticipantKind.STANDARD),
        permission={
            # canPublish, canSubscribe and canPublishData default to true in LiveKit.
            "can_publish": bool(video.get("canPublish", True)),
            "can_subscribe": bool(video.get("canSubscribe", True)),
            "can_publish_data": bool(video.get("canPublishData", True)),
            "hidden": bool(video.get("hidden", False)),
            "can_update_metadata": bool(video.get("canUpdateOwnMetadata", False)),
            "agent": claims.kind == "agent" or bool(video.get("agent", False)),
        },
        config=config,
    )


def _claims(server: EmulatorServer, request: web.Request) -> auth.Claims:
    """The token from `Authorization: Bearer` or `?access_token=` (browsers cannot set headers
    on a WebSocket), checked as LiveKit checks it; a token without `roomJoin` is refused."""
    token = request.query.get("access_token") or ""
    header = request.headers.get("Authorization") or (f"{auth.BEARER}{token}" if token else None)
    claims = server.keys.verify_header(header)
    if claims is None or not claims.grant("roomJoin"):
        raise auth.PermissionDenied()
    return claims


async def validate(server: EmulatorServer, request: web.Request) -> web.Response:
    """`/rtc/validate`: what a client calls after a failed connection to learn why. 200
    "success" for a token that may join; 401 with LiveKit's wording otherwise."""
    try:
        _claims(server, request)
    except (auth.AuthError, auth.PermissionDenied) as exc:
        return web.Response(status=401, text=str(exc))
    return web.Response(text="success")


async def handle(server: EmulatorServer, request: web.Request) -> web.StreamResponse:
    """`GET /rtc`. `/rtc/v1` and `/rtc/v1/validate` answer 404, as a server without the
    one-connection path does: the rtc SDK and livekit-client then fall back to `/rtc`."""
    if request.path.startswith("/rtc/v1"):
        if request.path == "/rtc/v1":
            server.emulator.note(
                "a client asked for /rtc/v1 (one peer connection): 404, it falls back to /rtc"
            )
        return web.Response(status=404, text=NO_SINGLE_PC)
    ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
    if not ws.can_prepare(request).ok:
        return web.Response(status=404)  # LiveKit: not a WebSocket upgrade
    try:
        claims = _claims(server, request)
    except (auth.AuthError, auth.PermissionDenied) as exc:
        return web.Response(status=401, text=str(exc))
    if request.query.get("reconnect") in ("1", "true"):
        # Resuming needs the old session's transport state, which the emulator does not keep;
        # the JoinResponse also tells clients not to try (resume_connection DISABLED).
        return web.Response(status=501, text=NO_RESUME)
    try:
        participant, _ = token_join(server, claims)
    except BadRoomConfig as exc:
        return web.Response(status=401, text=str(exc))
    except auth.PermissionDenied as exc:
        return web.Response(status=401, text=str(exc))
    except EmulatorError as exc:
        # LiveKit answers a refused join (a full room, a missing name) before the upgrade.
        status = 400 if exc.code == "invalid_argument" else 500
        return web.Response(status=status, text=exc.message)
    try:
        await ws.prepare(request)
    except (ConnectionError, RuntimeError):
        server.emulator.remove_participant(claims.room, participant.identity, DisconnectReason.SIGNAL_CLOSE)
        raise
    await SignalSession(server, ws, participant, claims.room).run()
    return ws


class SignalSession:
    """One participant's signal connection and the server's side of its peer connection."""

    def __init__(
        self, server: EmulatorServer, ws: web.WebSocketResponse, participant: Participant, room: str
    ) -> None:
        self.server = server
        self.ws = ws
        self.participant = participant
        self.room = room
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._outbox: asyncio.Queue[rtc.SignalResponse | None] = asyncio.Queue()
        # Whether the participant is already out of the room (so closing must not remove it),
        # and whether the client said it was leaving (CLIENT_INITIATED) before its socket closed.
        self._left = False
        self._leave_sent = False

    # -- called by the server on room events ------------------------------------------------

    def send(self, message: rtc.SignalResponse) -> None:
        self._outbox.put_nowait(message)

    def removed(self, reason: DisconnectReason) -> None:
        """The server removed this participant (RemoveParticipant, a room closing, a duplicate
        identity, DeleteDispatch of an agent): tell the client, as LiveKit does, then close."""
        self._left = True
        leave = rtc.LeaveRequest(reason=int(reason), action=rtc.LeaveRequest.DISCONNECT)
        self.send(rtc.SignalResponse(leave=leave))
        self._outbox.put_nowait(None)

    # -- the connection ------------------------------------------------------------------

    async def run(self) -> None:
        sessions = self.server.rtc_sessions
        sessions[self.participant.sid] = self
        sender = asyncio.create_task(self._send_forever(), name="livekit-emulator-rtc-sender")
        try:
            self.send(rtc.SignalResponse(join=self._join_response()))
            await self._read_forever()
        finally:
            sessions.pop(self.participant.sid, None)
            if not self._left:
                # The client left (a LeaveRequest) or its socket closed: it is gone at once;
                # there is no resume to wait for.
                closed = (
                    DisconnectReason.CLIENT_INITIATED if self._leave_sent else DisconnectReason.SIGNAL_CLOSE
                )
                self._remove(closed)
            self._outbox.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await self.pc.close()
            await self.ws.close()

    def _remove(self, reason: DisconnectReason) -> None:
        room = self.server.emulator.rooms.get(self.room)
        current = room.participants.get(self.participant.identity) if room else None
        if current is self.participant:
            self._left = True
            self.server.emulator.remove_participant(self.room, self.participant.identity, reason)

    def _join_response(self) -> rtc.JoinResponse:
        room = self.server.emulator.room(self.room)
        others = [
            protos.participant_proto(p)
            for p in room.participants.values()
            if p is not self.participant and not p.permission.get("hidden")
        ]
        info = models.ServerInfo(
            edition=models.ServerInfo.Standard,
            version=SERVER_VERSION,
            protocol=SIGNAL_PROTOCOL,
            node_id=self.server.node_id,
        )
        return rtc.JoinResponse(
            room=protos.room_proto(room),
            participant=protos.participant_proto(self.participant),
            other_participants=others,
            server_version=SERVER_VERSION,
            server_info=info,
            # No ICE servers: the emulator's own host candidates are all there is.
            subscriber_primary=False,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            client_configuration=models.ClientConfiguration(
                resume_connection=models.ClientConfigSetting.DISABLED
            ),
        )

    async def _read_forever(self) -> None:
        while True:
            frame = await self.ws.receive()
            if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if frame.type != WSMsgType.BINARY:
                continue  # clients send protobuf in binary frames
            try:
                request = rtc.SignalRequest.FromString(frame.data)
            except DecodeError:
                logger.warning("undecodable signal request from %s; closing", self.participant.identity)
                return
            which = request.WhichOneof("message")
            if which == "offer":
                await self._answer(request.offer)
            elif which == "trickle":
                await self._trickle(request.trickle)
            elif which == "add_track":
                self._refuse_track(request.add_track)
            elif which == "ping":
                self.send(rtc.SignalResponse(pong=int(time.time() * 1000)))
            elif which == "ping_req":
                pong = rtc.Pong(
                    last_ping_timestamp=request.ping_req.timestamp, timestamp=int(time.time() * 1000)
                )
                self.send(rtc.SignalResponse(pong_resp=pong))
            elif which == "leave":
                self._leave_sent = True
                return
            # Everything else (subscriptions, mutes, metadata updates, sync_state, ...) is read
            # and ignored: there are no tracks to act on.

    async def _answer(self, offer: rtc.SessionDescription) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type=offer.type))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        local = self.pc.localDescription
        # The answer carries the emulator's candidates (aiortc gathers before answering).
        answer = rtc.SessionDescription(type=local.type, sdp=local.sdp, id=offer.id)
        self.send(rtc.SignalResponse(answer=answer))

    async def _trickle(self, trickle: rtc.TrickleRequest) -> None:
        if trickle.target != rtc.SignalTarget.PUBLISHER or self.pc.remoteDescription is None:
            return  # the subscriber connection is never offered
        try:
            init = json.loads(trickle.candidateInit)
        except ValueError:
            return
        line = str(init.get("candidate") or "")
        if not line:
            return  # end of candidates
        candidate = candidate_from_sdp(line.removeprefix("candidate:"))
        candidate.sdpMid = init.get("sdpMid")
        candidate.sdpMLineIndex = init.get("sdpMLineIndex")
        await self.pc.addIceCandidate(candidate)

    def _refuse_track(self, request: rtc.AddTrackRequest) -> None:
        self.server.emulator.note(
            f"{self.participant.identity!r} asked to publish a track in room {self.room!r}: refused, no media"
        )
        refusal = rtc.RequestResponse(
            reason=rtc.RequestResponse.NOT_ALLOWED, message=NO_MEDIA, add_track=request
        )
        self.send(rtc.SignalResponse(request_response=refusal))

    async def _send_forever(self) -> None:
        await send_until_closed(self.ws, self._outbox)


def on_room_event(server: EmulatorServer, event: str, room: Room, participant: Participant | None) -> None:
    """Tell the room's connected participants what LiveKit tells them: a participant joined or
    left (ParticipantUpdate), and, to a participant the server removed, a LeaveRequest."""
    if participant is None or event not in ("participant_joined", "participant_left"):
        return
    sessions = server.rtc_sessions
    if event == "participant_left":
        own = sessions.pop(participant.sid, None)
        if own is not None and not own._left:
            own.removed(participant.disconnect_reason)
    if participant.permission.get("hidden"):
        return
    update = rtc.SignalResponse(
        update=rtc.ParticipantUpdate(participants=[protos.participant_proto(participant)])
    )
    for session in list(sessions.values()):
        if session.room == room.name and session.participant is not participant:
            session.send(update)


def use_host_candidates(host: str) -> None:
    """Offer ICE candidates on the address the emulator listens on only (127.0.0.1 in tests and
    `make run`), instead of every interface of the machine: aioice has no option for it, so its
    address lookup is replaced. A wildcard address keeps aioice's own lookup."""
    if host in ("", "0.0.0.0", "::"):
        aioice.ice.get_host_addresses = _all_addresses
        return

    def addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [host]

    aioice.ice.get_host_addresses = addresses


_all_addresses = aioice.ice.get_host_addresses
