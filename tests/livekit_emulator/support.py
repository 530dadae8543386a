"""Helpers for the emulator's contract tests: running the real LiveKit client, minting tokens,
polling with a deadline, raw HTTP, and a webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from livekit import api, rtc

from livekit_emulator import ControlError, ServerHandle
from tests.real_livekit import JoinRefused
from tests.support import eventually  # noqa: F401  (re-exported to the tests)

T = TypeVar("T")

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(server: ServerHandle, fn: Callable[[api.LiveKitAPI], Awaitable[T]]) -> T:
    """Run `fn` with a real LiveKitAPI client, built inside the running loop as it must be."""

    async def main() -> T:
        async with api.LiveKitAPI(server.url, server.api_key, server.api_secret) as client:
            return await fn(client)

    return asyncio.run(main())


def call_with_token(server: ServerHandle, token: str, fn: Callable[[api.LiveKitAPI], Awaitable[T]]) -> T:
    async def main() -> T:
        async with api.LiveKitAPI.with_token(token, server.url) as client:
            return await fn(client)

    return asyncio.run(main())


def token(
    server: ServerHandle,
    *,
    identity: str = "",
    grants: api.VideoGrants | None = None,
    config: api.RoomConfiguration | None = None,
    ttl: timedelta | None = None,
    secret: str | None = None,
    key: str | None = None,
) -> str:
    minted = api.AccessToken(key or server.api_key, secret or server.api_secret).with_identity(identity)
    if grants is not None:
        minted.with_grants(grants)
    if config is not None:
        minted.with_room_config(config)
    if ttl is not None:
        minted.with_ttl(ttl)
    return minted.to_jwt()


def join_token(
    server: ServerHandle, room: str, identity: str, *, agents: list[tuple[str, str]] | None = None
) -> str:
    config = None
    if agents is not None:
        config = api.RoomConfiguration(
            agents=[api.RoomAgentDispatch(agent_name=name, metadata=meta) for name, meta in agents]
        )
    return token(server, identity=identity, grants=api.VideoGrants(room_join=True, room=room), config=config)


def join(server: Any, jwt: str) -> dict[str, Any]:
    """A participant joins with its token: through the emulator's control API, or with LiveKit's
    rtc SDK (real WebRTC) on the real server. Raises JoinRefused (.status, .message) either way."""
    if server.kind == "real":
        return server.participants.join(jwt)
    try:
        return server.control.join(jwt)
    except ControlError as exc:
        message = exc.body.get("error", "") if isinstance(exc.body, dict) else str(exc.body)
        raise JoinRefused(exc.status, message) from None


def leave(server: Any, room: str, identity: str) -> None:
    if server.kind == "real":
        server.participants.leave(room, identity)
    else:
        server.control.leave(room, identity)


def server_log(server: Any) -> str:
    """What the server logged: the real server's log file, or the emulator's log lines."""
    if server.kind == "real":
        return server.log_path.read_text(errors="replace")
    return "\n".join(server.control.state()["log"])


def room_names(server: Any) -> set[str]:
    rooms = call(server, lambda lk: lk.room.list_rooms(api.ListRoomsRequest()))
    return {r.name for r in rooms.rooms}


def room(server: Any, name: str) -> Any:
    """The room as ListRooms shows it, or None."""
    rooms = call(server, lambda lk: lk.room.list_rooms(api.ListRoomsRequest(names=[name])))
    return rooms.rooms[0] if rooms.rooms else None


def participants(server: Any, room_name: str) -> list[Any]:
    listed = call(server, lambda lk: lk.room.list_participants(api.ListParticipantsRequest(room=room_name)))
    return list(listed.participants)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _no_proxy.open(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def jobs_of(dispatch: Any) -> list[Any]:
    return list(dispatch.state.jobs)


@dataclass
class Received:
    body: str
    authorization: str
    content_type: str
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A tiny HTTP server recording webhook deliveries; `fail_next` answers 500 that many times."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self, room: str | None = None) -> list[str]:
        """The events received, of one room if given (a session's real server may still deliver
        events of an earlier test's rooms)."""
        with self._lock:
            return [
                r.json["event"]
                for r in self.received
                if room is None or r.json.get("room", {}).get("name") == room
            ]

    def record(self, handler: BaseHTTPRequestHandler) -> int:
        length = int(handler.headers.get("Content-Length", "0"))
        body = handler.rfile.read(length).decode()
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                self.failures += 1
                return 500
            self.received.append(
                Received(
                    body=body,
                    authorization=handler.headers.get("Authorization", ""),
                    content_type=handler.headers.get("Content-Type", ""),
                    at=time.monotonic(),
                )
            )
        return 200


def start_receiver() -> tuple[WebhookReceiver, ThreadingHTTPServer]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            status = receiver.record(self)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{httpd.server_address[1]}/livekit/webhook"
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return receiver, httpd


class Callers:
    """rtc SDK participants on one event loop of their own (the SDK needs a running loop for as
    long as a participant stays connected); each records what its room tells it."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.rooms: dict[str, rtc.Room] = {}
        self.events: dict[str, list[tuple[str, str]]] = {}

    def _run(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def join(self, room_name: str, identity: str) -> rtc.Room:
        events: list[tuple[str, str]] = []

        async def connect() -> rtc.Room:
            room = rtc.Room(loop=self.loop)
            room.on("participant_connected", lambda p: events.append(("joined", p.identity)))
            room.on("participant_disconnected", lambda p: events.append(("left", p.identity)))
            room.on(
                "disconnected",
                lambda reason: events.append(("disconnected", rtc.DisconnectReason.Name(reason))),
            )
            await room.connect(self.server.ws_url, join_token(self.server, room_name, identity))
            return room

        room = self._run(connect())
        self.rooms[identity], self.events[identity] = room, events
        return room

    def remote(self, identity: str) -> dict[str, rtc.RemoteParticipant]:
        return dict(self.rooms[identity].remote_participants)

    def publish_silence(self, identity: str) -> Any:
        async def publish() -> Any:
            source = rtc.AudioSource(48000, 1)
            track = rtc.LocalAudioTrack.create_audio_track("mic", source)
            return await self.rooms[identity].local_participant.publish_track(track)

        return self._run(publish())

    def leave(self, identity: str) -> None:
        self._run(self.rooms.pop(identity).disconnect())

    def close(self) -> None:
        for identity in list(self.rooms):
            with contextlib.suppress(Exception):  # already gone; the loop must stop regardless
                self.leave(identity)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
