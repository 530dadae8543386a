"""Hosting: the aiohttp listeners, fault injection, the timeout sweeper, and ways to run the
emulator: `serve()` for the command line and `run_in_thread()` for tests and benchmarks.

Two listeners share one `Emulator`:
- the API listener (`url`) serves the Twirp API, the worker WebSocket `/agent`, `/_emulator/*`
  and `GET /` (health);
- the control listener (`control_url`) serves only `/_emulator/*`.
The "down" fault closes the API listener's socket, so new connections are refused
(aiohttp `ClientConnectorError`), and force-closes its open keep-alive connections (a request
on one gets `ServerDisconnectedError`). The control listener keeps working, which is how a
test switches "down" off again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import ipaddress
import logging
import random
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from . import agents, protos, rtc
from .auth import KeyRing
from .client import ControlClient
from .control import PREFIX as CONTROL_PREFIX
from .control import ControlAPI
from .models import DisconnectReason, Faults, Participant, Room
from .state import Emulator
from .twirp import NO_RESPONSE_AFTER, TwirpAPI, error_response
from .twirp import PREFIX as TWIRP_PREFIX
from .webhooks import WebhookSender, WebhookSettings

logger = logging.getLogger("livekit_emulator")

# A secret of 32+ bytes, so PyJWT does not warn in the tests that use the default.
DEFAULT_KEYS = {"devkey": "livekit-emulator-development-secret-0123456789"}
# How long a "timeout" fault holds a request: longer than any sane client timeout.
HANG_SECONDS = 30.0
SWEEP_INTERVAL = 0.05


def _is_loopback(host: str | None) -> bool:
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    # On a dual-stack socket an IPv4 client shows up as ::ffff:127.0.0.1.
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class EmulatorServer:
    """One emulated LiveKit server on an asyncio loop. `start()` and `stop()` run on that loop."""

    def __init__(
        self,
        *,
        keys: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int = 0,
        webhook_url: str | None = None,
        control_token: str | None = None,
        no_response_after: float = NO_RESPONSE_AFTER,
    ) -> None:
        self.keys = KeyRing(keys or DEFAULT_KEYS)
        self.no_response_after = no_response_after
        self.host = host
        self.port = port
        self.control_port = control_port
        self.control_token = control_token
        api_key, api_secret = next(iter(self.keys.keys.items()))
        # LiveKit signs webhooks with one configured key; the emulator uses the first.
        self.webhooks = WebhookSender(
            api_key=api_key, api_secret=api_secret, settings=WebhookSettings(url=webhook_url)
        )
        self.emulator = Emulator(schedule=self._call_later, emit=self._on_event)
        self.node_id = agents.node_id()
        self._random = random.Random()
        self._faults_changed = asyncio.Event()
        self._api_runner: web.AppRunner | None = None
        self._api_site: web.TCPSite | None = None
        self._control_runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # Participants connected over /rtc, by participant sid.
        self.rtc_sessions: dict[str, rtc.SignalSession] = {}

    @property
    def url(self) -> str:
        return f"http://{self._url_host}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://{self._url_host}:{self.control_port}"

    @property
    def _url_host(self) -> str:
        # A wildcard bind address is not something to connect to; loopback reaches it.
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    async def start(self) -> None:
        control = ControlAPI(self)
        api_app = web.Application(middlewares=[self._cors, self._guard])
        api_app.add_routes(control.routes())
        api_app.router.add_get("/", self._health)
        api_app.router.add_get("/agent", self._agent)
        api_app.router.add_get("/rtc/validate", self._rtc_validate)
        api_app.router.add_get("/rtc/v1/validate", self._rtc)
        api_app.router.add_get("/rtc", self._rtc)
        api_app.router.add_get("/rtc/v1", self._rtc)
        api_app.router.add_route(
            "*",
            TWIRP_PREFIX + "{route:.*}",
            TwirpAPI(self.emulator, self.keys, no_response_after=self.no_response_after).handle,
        )
        control_app = web.Application(middlewares=[self._guard])
        control_app.add_routes(control.routes())

        self._api_runner = web.AppRunner(api_app, access_log=None, handle_signals=False)
        self._control_runner = web.AppRunner(control_app, access_log=None, handle_signals=False)
        await self._api_runner.setup()
        await self._control_runner.setup()
        self._api_site = web.TCPSite(self._api_runner, self.host, self.port)
        await self._api_site.start()
        self.port = self._api_runner.addresses[0][1]
        await web.TCPSite(self._control_runner, self.host, self.control_port).start()
        self.control_port = self._control_runner.addresses[0][1]
        rtc.use_host_candidates(self.host)
        await self.webhooks.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="livekit-emulator-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.emulator.reset()
        self._drop_participants()
        self._faults_changed.set()
        await self.webhooks.stop()
        for runner in (self._api_runner, self._control_runner):
            if runner is not None:
                await runner.cleanup()

    async def reset(self) -> None:
        """Back to a freshly started server: no rooms, workers, faults or queued webhooks; the
        participants connected over /rtc are told the server shut down, and disconnected."""
        self.emulator.reset()
        self._drop_participants()
        await self.set_faults(Faults())
        await self.webhooks.reset()

    async def set_faults(self, faults: Faults) -> None:
        self.emulator.faults = faults
        await self._set_down(faults.down)
        # Release requests held by a "timeout" fault.
        self._faults_changed.set()
        self._faults_changed = asyncio.Event()

    async def _set_down(self, down: bool) -> None:
        assert self._api_runner is not None
        if down and self._api_site is not None:
            await self._api_site.stop()
            self._api_site = None
            for connection in self._api_runner.server.connections if self._api_runner.server else []:
                connection.force_close()
        elif not down and self._api_site is None:
            site = web.TCPSite(self._api_runner, self.host, self.port)
            await site.start()
            self._api_site = site

    def _drop_participants(self) -> None:
        for session in list(self.rtc_sessions.values()):
            session.removed(DisconnectReason.SERVER_SHUTDOWN)
        self.rtc_sessions.clear()

    def _call_later(self, delay: float, callback: Any) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)

    def _on_event(self, event: str, room: Room, participant: Participant | None) -> None:
        if self.webhooks.settings.url:
            self.webhooks.enqueue(protos.webhook_event(event, room, participant, now=time.time()))
        rtc.on_room_event(self, event, room, participant)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self.emulator.sweep()
            except Exception:  # a bug here must not stop rooms from ever closing again
                logger.exception("room sweep failed")

    async def _agent(self, request: web.Request) -> web.StreamResponse:
        return await agents.handle(self, request)

    async def _rtc(self, request: web.Request) -> web.StreamResponse:
        return await rtc.handle(self, request)

    async def _rtc_validate(self, request: web.Request) -> web.Response:
        return await rtc.validate(self, request)

    @staticmethod
    async def _health(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Any origin may call, as livekit-server's CORS policy allows (tokens are the guard): a
        browser's livekit-client reads /rtc/validate from the page's own origin."""
        response = await handler(request)
        origin = request.headers.get("Origin")
        if origin and not request.path.startswith(CONTROL_PREFIX) and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Fault injection in front of the Twirp API; access control in front of /_emulator/."""
        if request.path.startswith(CONTROL_PREFIX):
            refusal = self._refuse_control(request)
            return refusal if refusal is not None else await handler(request)
        if not request.path.startswith(TWIRP_PREFIX):
            return await handler(request)
        faults = self.emulator.faults
        if faults.down:
            # A keep-alive connection that raced the switch: drop it unanswered.
            if request.protocol is not None:
                request.protocol.force_close()
            return web.Response(status=503)
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.timeout_rate and self._random.random() < faults.timeout_rate:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._faults_changed.wait(), HANG_SECONDS)
            return error_response("unavailable", "request held by the timeout fault")
        if faults.error_rate and self._random.random() < faults.error_rate:
            status = faults.error_status or self._random.choice((500, 503))
            code = "unavailable" if status == 503 else "internal"
            return error_response(code, f"injected fault ({status})", status=status)
        return await handler(request)

    def _refuse_control(self, request: web.Request) -> web.Response | None:
        if self.control_token:
            expected = f"Bearer {self.control_token}".encode()
            if hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
                return None
        if _is_loopback(request.remote):
            return None
        if self.control_token:
            return web.json_response({"error": "a valid control token is required"}, status=401)
        return web.json_response({"error": "the control API is open to loopback clients only"}, status=403)


class ServerHandle:
    """A server running on its own thread and event loop (see `run_in_thread`)."""

    kind = "emulator"  # the tests' real-server handle says "real"

    def __init__(self, server: EmulatorServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread):
        self._server = server
        self._loop = loop
        self._thread = thread
        self.url = server.url
        # Where livekit-agents workers and rtc clients connect (LIVEKIT_URL for a worker).
        self.ws_url = "ws" + server.url[len("http") :]
        self.control_url = server.control_url
        self.keys = dict(server.keys.keys)
        self.api_key, self.api_secret = next(iter(self.keys.items()))
        self.control = ControlClient(self.control_url, token=server.control_token)
        self.no_response_after = server.no_response_after

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_thread(
    *,
    keys: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    control_port: int = 0,
    webhook_url: str | None = None,
    control_token: str | None = None,
    no_response_after: float = NO_RESPONSE_AFTER,
) -> ServerHandle:
    """Start an emulator in this process, on a background thread with its own event loop.
    Port 0 picks a free port. Returns once it accepts connections; `.stop()` shuts it down.
    `no_response_after` is how long a call for a room or participant the server does not have
    waits before its 503 (the real server's 3 s; tests shorten it)."""
    loop = asyncio.new_event_loop()
    ready: concurrent.futures.Future[EmulatorServer] = concurrent.futures.Future()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                _started(
                    keys=keys,
                    host=host,
                    port=port,
                    control_port=control_port,
                    webhook_url=webhook_url,
                    control_token=control_token,
                    no_response_after=no_response_after,
                )
            )
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(server)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(server.stop())
            loop.close()

    thread = threading.Thread(target=main, name="livekit-emulator", daemon=True)
    thread.start()
    return ServerHandle(ready.result(timeout=10), loop, thread)


async def _started(**kwargs: Any) -> EmulatorServer:
    # The server must be built on its loop: it creates asyncio primitives.
    server = EmulatorServer(**kwargs)
    await server.start()
    return server


async def serve(**kwargs: Any) -> None:
    """The command line's main loop: run until SIGTERM or SIGINT, then shut down cleanly."""
    server = await _started(**kwargs)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(
        f"livekit_emulator listening on {server.url} (control API also on {server.control_url})", flush=True
    )
    try:
        await stopping.wait()
    finally:
        await server.stop()
