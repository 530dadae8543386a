"""The control API under `/_emulator/`: what a browser would do (join with a token, leave),
simulated agent workers, fault and webhook switches, bulk room seeding, state inspection and
reset. JSON in and out; the shapes are documented in README.md and kept stable."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import auth, rtc
from .models import (
    AgentSpec,
    DisconnectReason,
    Dispatch,
    EmulatorError,
    Faults,
    Job,
    Participant,
    ParticipantKind,
    Room,
    RoomConfig,
    Worker,
    WorkerFaults,
)
from .twirp import STATUS

if TYPE_CHECKING:
    from .server import EmulatorServer

PREFIX = "/_emulator/"

Handler = Callable[[web.Request], Awaitable[web.Response]]


class BadRequest(Exception):
    pass


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _number(body: dict[str, Any], key: str, *, maximum: float | None = None) -> float:
    value = body.get(key)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadRequest(f"{key} must be a non-negative number")
    if maximum is not None and value > maximum:
        raise BadRequest(f"{key} must be at most {maximum}")
    return float(value)


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")


def _json_errors(handler: Handler) -> Handler:
    """Turns a control handler's exceptions into JSON errors."""

    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        except EmulatorError as exc:
            return _error(STATUS.get(exc.code, 500), exc.message)

    return wrapped


# -- JSON views of the state ---------------------------------------------------------------


def participant_json(p: Participant) -> dict[str, Any]:
    return {
        "identity": p.identity,
        "sid": p.sid,
        "kind": p.kind.name,
        "state": p.state.name,
        "attributes": dict(p.attributes),
        "name": p.name,
        "metadata": p.metadata,
        "joined_at": p.joined_at,
        "permission": dict(p.permission),
    }


def room_json(room: Room) -> dict[str, Any]:
    return {
        "name": room.name,
        "sid": room.sid,
        "metadata": room.metadata,
        "created_at": room.created_at,
        "num_participants": room.num_participants,
        "empty_timeout": room.empty_timeout,
        "departure_timeout": room.departure_timeout,
        "max_participants": room.max_participants,
        "participants": [participant_json(p) for p in room.participants.values()],
    }


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status.name,
        "error": job.error,
        "participant_identity": job.participant_identity,
        "worker_id": job.worker_id,
        "started_at": job.started_at,
        "ended_at": job.ended_at or None,
    }


def dispatch_json(d: Dispatch) -> dict[str, Any]:
    return {
        "id": d.id,
        "room": d.room,
        "agent_name": d.agent_name,
        "metadata": d.metadata,
        "source": d.source,
        "created_at": d.created_at,
        "received_at": d.received_at,
        "request_id": d.request_id,
        "jobs": [job_json(j) for j in d.jobs],
    }


def worker_json(w: Worker) -> dict[str, Any]:
    return {
        "id": w.id,
        "agent_name": w.agent_name,
        "behavior": w.behavior,
        "delay_ms": w.delay_ms,
        "crash_after_ms": w.crash_after_ms,
        "capacity": w.capacity,
        "registered_at": w.registered_at,
        "active_jobs": len(w.jobs),
        "deployment": w.deployment,
        "remote": w.remote,
        "available": w.available,
        "load": w.load,
        "version": w.version,
        "status_at": w.status_at or None,
    }


def worker_faults_json(f: WorkerFaults) -> dict[str, Any]:
    return {
        "refuse_availability": f.refuse_availability,
        "drop_assignment": f.drop_assignment,
        "assignment_delay_ms": f.assignment_delay_ms,
    }


def faults_json(f: Faults) -> dict[str, Any]:
    return {
        "latency_ms": f.latency_ms,
        "error_rate": f.error_rate,
        "error_status": f.error_status,
        "timeout_rate": f.timeout_rate,
        "down": f.down,
    }


# -- handlers ------------------------------------------------------------------------------


class ControlAPI:
    def __init__(self, server: EmulatorServer) -> None:
        self.server = server

    def routes(self) -> list[web.RouteDef]:
        routes = [
            ("POST", "/_emulator/join", self.join),
            ("POST", "/_emulator/leave", self.leave),
            ("POST", "/_emulator/workers", self.add_worker),
            ("DELETE", "/_emulator/workers/{agent_name:.*}", self.remove_workers),
            ("POST", "/_emulator/worker_faults", self.set_worker_faults),
            ("POST", "/_emulator/disconnect_worker", self.disconnect_worker),
            ("POST", "/_emulator/faults", self.set_faults),
            ("POST", "/_emulator/webhooks", self.set_webhooks),
            ("GET", "/_emulator/webhooks", self.get_webhooks),
            ("POST", "/_emulator/rooms", self.create_rooms),
            ("GET", "/_emulator/state", self.state),
            ("POST", "/_emulator/reset", self.reset),
        ]
        return [web.route(method, path, _json_errors(handler)) for method, path, handler in routes]

    async def join(self, request: web.Request) -> web.Response:
        """A participant connects with its token, validated as LiveKit's /rtc endpoint does."""
        body = await _body(request)
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise BadRequest("token is required")
        try:
            claims = self.server.keys.verify(token)
            participant, created = rtc.token_join(self.server, claims)
        except (auth.AuthError, auth.PermissionDenied, rtc.BadRoomConfig) as exc:
            return _error(401, str(exc))
        room_name = claims.room
        return web.json_response(
            {**participant_json(participant), "room": room_name, "room_created": created}
        )

    async def leave(self, request: web.Request) -> web.Response:
        body = await _body(request)
        _only(body, {"room", "identity"})
        room, identity = body.get("room"), body.get("identity")
        if not isinstance(room, str) or not isinstance(identity, str):
            raise BadRequest("room and identity are required")
        participant = self.server.emulator.remove_participant(
            room, identity, DisconnectReason.CLIENT_INITIATED
        )
        return web.json_response({**participant_json(participant), "room": room})

    async def add_worker(self, request: web.Request) -> web.Response:
        body = await _body(request)
        _only(body, {"agent_name", "behavior", "delay_ms", "crash_after_ms", "capacity"})
        agent_name = body.get("agent_name", "")
        behavior = body.get("behavior", "accept")
        capacity = body.get("capacity")
        if not isinstance(agent_name, str) or not isinstance(behavior, str):
            raise BadRequest("agent_name and behavior must be strings")
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int)):
            raise BadRequest("capacity must be an integer or null")
        worker = self.server.emulator.add_worker(
            agent_name,
            behavior,
            delay_ms=_number(body, "delay_ms"),
            crash_after_ms=_number(body, "crash_after_ms")
            if body.get("crash_after_ms") is not None
            else None,
            capacity=capacity,
        )
        return web.json_response(worker_json(worker))

    async def remove_workers(self, request: web.Request) -> web.Response:
        removed = self.server.emulator.remove_workers(request.match_info["agent_name"])
        return web.json_response({"removed": [worker_json(w) for w in removed]})

    async def set_worker_faults(self, request: web.Request) -> web.Response:
        """Replaces the job hand-over faults: fields left out are cleared, `{}` clears all."""
        body = await _body(request)
        _only(body, {"refuse_availability", "drop_assignment", "assignment_delay_ms"})
        flags = {key: body.get(key, False) for key in ("refuse_availability", "drop_assignment")}
        if any(not isinstance(value, bool) for value in flags.values()):
            raise BadRequest("refuse_availability and drop_assignment must be booleans")
        faults = WorkerFaults(**flags, assignment_delay_ms=_number(body, "assignment_delay_ms"))
        self.server.emulator.worker_faults = faults
        return web.json_response(worker_faults_json(faults))

    async def disconnect_worker(self, request: web.Request) -> web.Response:
        """The kill-socket fault: `{"worker_id"}`; a real worker's socket is closed."""
        body = await _body(request)
        _only(body, {"worker_id"})
        worker_id = body.get("worker_id")
        if not isinstance(worker_id, str) or not worker_id:
            raise BadRequest("worker_id is required")
        return web.json_response(worker_json(self.server.emulator.disconnect_worker(worker_id)))

    async def set_faults(self, request: web.Request) -> web.Response:
        """Replaces the whole fault set: fields left out are cleared, `{}` clears all."""
        body = await _body(request)
        _only(body, {"latency_ms", "error_rate", "error_status", "timeout_rate", "down"})
        error_status = body.get("error_status")
        if error_status is not None and error_status not in (500, 503):
            raise BadRequest("error_status must be 500, 503 or null")
        down = body.get("down", False)
        if not isinstance(down, bool):
            raise BadRequest("down must be a boolean")
        faults = Faults(
            latency_ms=_number(body, "latency_ms"),
            error_rate=_number(body, "error_rate", maximum=1),
            error_status=error_status,
            timeout_rate=_number(body, "timeout_rate", maximum=1),
            down=down,
        )
        await self.server.set_faults(faults)
        return web.json_response(faults_json(self.server.emulator.faults))

    async def set_webhooks(self, request: web.Request) -> web.Response:
        """Changes only the fields given: `url`, `drop`, `duplicate`, `delay_ms`, ..."""
        body = await _body(request)
        try:
            self.server.webhooks.settings = self.server.webhooks.settings.updated(body)
        except (TypeError, ValueError) as exc:
            raise BadRequest(str(exc)) from exc
        return web.json_response(self.server.webhooks.status())

    async def get_webhooks(self, request: web.Request) -> web.Response:
        return web.json_response(self.server.webhooks.status())

    async def create_rooms(self, request: web.Request) -> web.Response:
        """Bulk seeding for demos and benchmarks. A room is created as a first join would create
        it (agents or the implicit "" dispatch); timeouts may be fractional seconds. An existing
        room keeps its configuration and only gains the participants."""
        body = await _body(request)
        specs = body.get("rooms")
        if not isinstance(specs, list):
            raise BadRequest("rooms must be a list")
        emulator = self.server.emulator
        answer = []
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise BadRequest("each room needs a name")
            _only(
                spec,
                {
                    "name",
                    "empty_timeout",
                    "departure_timeout",
                    "max_participants",
                    "metadata",
                    "agents",
                    "participants",
                },
            )
            config = RoomConfig(
                empty_timeout=_number(spec, "empty_timeout"),
                departure_timeout=_number(spec, "departure_timeout"),
                max_participants=int(_number(spec, "max_participants")),
                metadata=str(spec.get("metadata", "")),
                agents=[
                    AgentSpec(str(a.get("agent_name", "")), str(a.get("metadata", "")))
                    for a in spec.get("agents") or []
                ],
            )
            room, created = emulator.get_or_create_room(spec["name"], config)
            for p in spec.get("participants") or []:
                kind = str(p.get("kind", "STANDARD")).upper()
                if kind not in ParticipantKind.__members__:
                    raise BadRequest(f"unknown participant kind {kind!r}")
                emulator.join(
                    room.name,
                    str(p.get("identity", "")),
                    name=str(p.get("name", "")),
                    metadata=str(p.get("metadata", "")),
                    attributes=dict(p.get("attributes") or {}),
                    kind=ParticipantKind[kind],
                )
            answer.append({"name": room.name, "sid": room.sid, "created": created})
        return web.json_response({"rooms": answer})

    async def state(self, request: web.Request) -> web.Response:
        """Everything, or one room with `?room=NAME`."""
        emulator = self.server.emulator
        only = request.query.get("room")
        rooms = [r for r in emulator.rooms.values() if only is None or r.name == only]
        return web.json_response(
            {
                "rooms": [room_json(r) for r in rooms],
                "dispatches": [dispatch_json(d) for r in rooms for d in r.dispatches.values()],
                "workers": [worker_json(w) for w in emulator.workers.values()],
                "faults": faults_json(emulator.faults),
                "worker_faults": worker_faults_json(emulator.worker_faults),
                "webhooks_pending": self.server.webhooks.pending,
                "counters": {
                    "requests": dict(emulator.requests),
                    "create_dispatch_calls": list(emulator.create_dispatch_calls),
                },
                "log": list(emulator.log),
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        await self.server.reset()
        return web.json_response({"reset": True})
