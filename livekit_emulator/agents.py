"""The worker WebSocket, `/agent`: real livekit-agents workers register here and get jobs, as
they do from livekit-server (pkg/service/agentservice.go, pkg/agent/worker.go).

The protocol is `livekit.protocol.agent` WorkerMessage / ServerMessage in binary frames:
register → RegisterWorkerResponse (worker id, ServerInfo); AvailabilityRequest → the worker's
AvailabilityResponse → JobAssignment with a participant token signed here; UpdateJobStatus,
UpdateWorkerStatus and WorkerPing from the worker; JobTermination when the room closes or the
dispatch is deleted. Which worker gets which job is decided in `state.py`, with the same rules
as for simulated workers; this module only carries the messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol import agent, models

from . import auth, protos
from .models import AgentToken, Job, JobStatus, Room, new_id

if TYPE_CHECKING:
    from .server import EmulatorServer

logger = logging.getLogger("livekit_emulator")

SERVER_VERSION = "1.13.5"
# Signal protocol and agent protocol versions livekit-server v1.13.5 reports in ServerInfo.
SIGNAL_PROTOCOL = 16
AGENT_PROTOCOL = 1
# LiveKit closes a socket that has not registered within this long.
REGISTER_TIMEOUT = 10.0


class WorkerSocket:
    """One worker connection: the `WorkerLink` the state calls, and the reader loop."""

    def __init__(self, server: EmulatorServer, ws: web.WebSocketResponse, api_key: str) -> None:
        self.server = server
        self.ws = ws
        self.api_key = api_key
        self.api_secret = server.keys.keys[api_key]
        self.worker_id = ""
        self.permission = models.ParticipantPermission()
        self._outbox: asyncio.Queue[agent.ServerMessage | None] = asyncio.Queue()

    # -- WorkerLink (called by the state, on the loop) --------------------------------------

    def offer(self, job: Job, room: Room) -> None:
        self._send(
            agent.ServerMessage(availability=agent.AvailabilityRequest(job=protos.job_proto(job, room)))
        )

    def assign(self, job: Job, room: Room, token: AgentToken) -> None:
        # The real server leaves `url` empty: the worker connects its job where it registered.
        assignment = agent.JobAssignment(job=protos.job_proto(job, room), token=self._token(job, token))
        self._send(agent.ServerMessage(assignment=assignment))

    def terminate(self, job_id: str) -> None:
        self._send(agent.ServerMessage(termination=agent.JobTermination(job_id=job_id)))

    def close(self) -> None:
        self._outbox.put_nowait(None)

    # -- the connection ------------------------------------------------------------------

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_forever(), name="livekit-emulator-worker-sender")
        try:
            if await self._handshake():
                await self._read_forever()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            if self.worker_id:
                self.server.emulator.unregister_worker(self.worker_id)
            await self.ws.close()

    async def _handshake(self) -> bool:
        try:
            async with asyncio.timeout(REGISTER_TIMEOUT):
                while True:
                    message = await self._receive()
                    if message is None:
                        return False
                    which = message.WhichOneof("message")
                    if which == "ping":
                        self._pong(message.ping)
                    elif which == "register":
                        break
                    else:
                        logger.warning("worker sent %s before registering; closing", which)
                        return False
        except TimeoutError:
            logger.warning("worker did not register within %.0f s; closing", REGISTER_TIMEOUT)
            return False
        register = message.register
        if register.type != agent.JobType.JT_ROOM:
            # Publisher and participant jobs need tracks and participants' media: not emulated.
            logger.warning(
                "worker registered for job type %s, which the emulator never dispatches", register.type
            )
        if register.HasField("allowed_permissions"):
            self.permission = register.allowed_permissions
        else:
            self.permission = models.ParticipantPermission(
                can_subscribe=True, can_publish=True, can_publish_data=True, can_update_metadata=True
            )
        worker = self.server.emulator.register_worker(
            register.agent_name, deployment=register.deployment, version=register.version, link=self
        )
        self.worker_id = worker.id
        info = models.ServerInfo(
            edition=models.ServerInfo.Standard,
            version=SERVER_VERSION,
            protocol=SIGNAL_PROTOCOL,
            agent_protocol=AGENT_PROTOCOL,
            node_id=self.server.node_id,
        )
        self._send(
            agent.ServerMessage(register=agent.RegisterWorkerResponse(worker_id=worker.id, server_info=info))
        )
        return True

    async def _read_forever(self) -> None:
        emulator = self.server.emulator
        while True:
            message = await self._receive()
            if message is None:
                return
            which = message.WhichOneof("message")
            if which == "availability":
                answer = message.availability
                emulator.worker_availability(
                    self.worker_id,
                    answer.job_id,
                    available=answer.available,
                    terminate=answer.terminate,
                    token=AgentToken(
                        identity=answer.participant_identity,
                        name=answer.participant_name,
                        metadata=answer.participant_metadata,
                        attributes=dict(answer.participant_attributes),
                    ),
                )
            elif which == "update_job":
                update = message.update_job
                emulator.worker_job_update(
                    self.worker_id, update.job_id, JobStatus(update.status), update.error
                )
            elif which == "update_worker":
                update = message.update_worker
                available = not update.HasField("status") or update.status == agent.WorkerStatus.WS_AVAILABLE
                emulator.worker_status(self.worker_id, available=available, load=update.load)
            elif which == "ping":
                self._pong(message.ping)
            # migrate_job and simulate_job: accepted and ignored (the real server ignores
            # migrate_job on a single node; simulated jobs are a Cloud console feature).

    async def _receive(self) -> agent.WorkerMessage | None:
        """The next worker message; None once the socket closes or sends garbage."""
        while True:
            frame = await self.ws.receive()
            if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return None
            if frame.type != WSMsgType.BINARY:
                continue  # LiveKit reads only binary frames from workers
            try:
                return agent.WorkerMessage.FromString(frame.data)
            except DecodeError:
                logger.warning(
                    "undecodable message from worker %s; closing", self.worker_id or "(unregistered)"
                )
                return None

    async def _send_forever(self) -> None:
        await send_until_closed(self.ws, self._outbox)  # the worker went: the reader unregisters it

    def _send(self, message: agent.ServerMessage) -> None:
        self._outbox.put_nowait(message)

    def _pong(self, ping: agent.WorkerPing) -> None:
        pong = agent.WorkerPong(last_timestamp=ping.timestamp, timestamp=int(time.time() * 1000))
        self._send(agent.ServerMessage(pong=pong))

    def _token(self, job: Job, token: AgentToken) -> str:
        """The job participant's token, as protoagent.BuildAgentToken makes it: signed with the
        key the worker connected with, kind agent, the worker's allowed permissions."""
        p = self.permission
        grants = api.VideoGrants(
            room_join=True,
            room=job.room,
            can_publish=p.can_publish,
            can_subscribe=p.can_subscribe,
            can_publish_data=p.can_publish_data,
            can_update_own_metadata=p.can_update_metadata,
            hidden=p.hidden,
            agent=True,
        )
        minted = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(token.identity)
            .with_name(token.name)
            .with_metadata(token.metadata)
            .with_attributes(token.attributes)
            .with_kind("agent")
            .with_grants(grants)
        )
        return minted.to_jwt()


async def handle(server: EmulatorServer, request: web.Request) -> web.StreamResponse:
    """`GET /agent`: LiveKit's order of checks: the token (401 plain text), a WebSocket upgrade
    (404 otherwise, with an empty body), then the `video.agent` grant (401 "permissions denied")."""
    try:
        claims = server.keys.verify_header(request.headers.get("Authorization"))
    except auth.AuthError as exc:
        return web.Response(status=401, text=str(exc))
    ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
    if not ws.can_prepare(request).ok:
        return web.Response(status=404)
    try:
        auth.ensure_agent(claims)
    except auth.PermissionDenied as exc:
        return web.Response(status=401, text=str(exc))
    assert claims is not None
    await ws.prepare(request)
    await WorkerSocket(server, ws, claims.api_key).run()
    return ws


def node_id() -> str:
    return new_id("ND_")


async def send_until_closed(ws: web.WebSocketResponse, outbox: asyncio.Queue[Any]) -> None:
    """Send each protobuf message queued in `outbox` as a binary frame, in order, until a
    `None` closes the socket or the peer has gone (the socket's reader handles the leaving)."""
    while True:
        message = await outbox.get()
        if message is None:
            await ws.close()
            return
        try:
            await ws.send_bytes(message.SerializeToString())
        except (ConnectionError, RuntimeError):
            return
