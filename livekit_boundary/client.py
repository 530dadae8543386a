"""The one way the portal talks to LiveKit's server API.

The only module that imports `livekit.api` service classes. It builds `LiveKitAPI` inside the
coroutine it runs (the SDK needs a running event loop), puts a timeout on every call, and turns
LiveKit's errors into the portal's own:

- `LiveKitUnavailable`: transient (connection refused or reset, timeout, 5xx, 429); callers
  retry with backoff.
- `LiveKitRejected`: LiveKit answered 4xx; carries LiveKit's code and message; retrying will
  not help. `LiveKitNotFound` and `LiveKitAuthRejected` narrow it.

Errors and logs name the URL and the method, never the API secret or a signed token.
Answers are plain dataclasses, so nothing above this module handles protobuf.

Sync code (Celery tasks, views, admin) calls `livekit_run(fn)`, which runs `fn(client)` on a
fresh event loop with one connection pool for all its calls; the reconcile pass uses that to
fan out thousands of calls with bounded concurrency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from django.conf import settings
from livekit.api import LiveKitAPI, TwirpError, VideoGrants
from livekit.protocol.agent import JobStatus
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest
from livekit.protocol.models import DisconnectReason, ParticipantInfo
from livekit.protocol.room import (
    DeleteRoomRequest,
    ListParticipantsRequest,
    ListRoomsRequest,
    RoomParticipantIdentity,
)

from dispatchportal import metrics
from livekit_boundary.tokens import jwt_hs256

logger = logging.getLogger(__name__)

T = TypeVar("T")

AGENT_NAME_ATTRIBUTE = "lk.agent_name"
KIND_AGENT = ParticipantInfo.Kind.AGENT
# JS_PENDING -> "pending", ... (livekit.JobStatus)
JOB_STATUSES = {number: name.removeprefix("JS_").lower() for name, number in JobStatus.items()}
# Disconnect reasons (livekit.DisconnectReason) that mean the room itself went away: an agent
# leaving for these must not be re-dispatched (CreateDispatch would re-create the room).
ROOM_GONE_REASONS = frozenset({DisconnectReason.ROOM_DELETED, DisconnectReason.ROOM_CLOSED})
_TRANSIENT_CODES = frozenset(
    {"unavailable", "internal", "unknown", "deadline_exceeded", "resource_exhausted", "aborted"}
)


class LiveKitError(Exception):
    """Base of every LiveKit failure the portal reports; the message is safe to show."""

    def __init__(self, message: str, *, method: str = "", status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.status = status
        self.code = code


class LiveKitUnavailable(LiveKitError):
    """LiveKit could not be reached or answered 5xx/429 or in time: worth retrying."""


class LiveKitRejected(LiveKitError):
    """LiveKit refused the request (4xx): retrying the same request will not help."""


class LiveKitNotFound(LiveKitRejected):
    pass


class LiveKitAuthRejected(LiveKitRejected):
    """LiveKit refused the API key or secret (HTTP 401) or the grant (403)."""


@dataclass(frozen=True, slots=True)
class LkRoom:
    name: str
    sid: str
    num_participants: int
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class LkParticipant:
    identity: str
    sid: str
    kind: int
    attributes: dict[str, str]
    joined_at: datetime | None
    disconnect_reason: int = 0
    state: int = 0  # JOINING 0, JOINED 1, ACTIVE 2 (media transport connected), DISCONNECTED 3

    @property
    def is_agent(self) -> bool:
        return self.kind == KIND_AGENT

    @property
    def agent_name(self) -> str | None:
        """The name the agent's worker registered with; None for non-agents."""
        if not self.is_agent:
            return None
        return self.attributes.get(AGENT_NAME_ATTRIBUTE, "")


@dataclass(frozen=True, slots=True)
class LkJob:
    id: str
    status: str  # pending, running, success, failed, cancelled
    error: str
    participant_identity: str

    @property
    def active(self) -> bool:
        return self.status in ("pending", "running")


@dataclass(frozen=True, slots=True)
class LkDispatch:
    id: str
    room: str
    agent_name: str
    metadata: str
    created_at: datetime | None
    jobs: tuple[LkJob, ...] = field(default_factory=tuple)
    deployment: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


def _from_seconds(seconds: float) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None


def _room(message: Any) -> LkRoom:
    created = message.creation_time_ms / 1000 if message.creation_time_ms else message.creation_time
    return LkRoom(
        name=message.name,
        sid=message.sid,
        num_participants=message.num_participants,
        created_at=_from_seconds(created),
    )


def participant_from_proto(message: Any) -> LkParticipant:
    joined = message.joined_at_ms / 1000 if message.joined_at_ms else message.joined_at
    return LkParticipant(
        identity=message.identity,
        sid=message.sid,
        kind=int(message.kind),
        attributes=dict(message.attributes),
        joined_at=_from_seconds(joined),
        disconnect_reason=int(message.disconnect_reason),
        state=int(message.state),
    )


def _dispatch(message: Any) -> LkDispatch:
    jobs = tuple(
        LkJob(
            id=job.id,
            status=JOB_STATUSES.get(int(job.state.status), "unknown"),
            error=job.state.error,
            participant_identity=job.state.participant_identity,
        )
        for job in message.state.jobs
    )
    return LkDispatch(
        id=message.id,
        room=message.room,
        agent_name=message.agent_name,
        metadata=message.metadata,
        created_at=_from_seconds(message.state.created_at / 1e9),
        jobs=jobs,
        deployment=message.deployment,
        attributes=dict(message.attributes),
    )


def _translate(exc: BaseException, *, method: str, url: str) -> LiveKitError:
    """Map an SDK or transport error to the portal's; never include credentials."""
    if isinstance(exc, TwirpError):
        status, code = exc.status, exc.code
        message = exc.message or f"HTTP {status}"
        text = f"LiveKit {method} answered {status} {code}: {message}"
        if status >= 500 or status == 429 or (status == 0 and code in _TRANSIENT_CODES):
            return LiveKitUnavailable(text, method=method, status=status, code=code)
        if status in (401, 403):
            return LiveKitAuthRejected(
                f"LiveKit at {url} refused the API key or secret ({method} answered {status}"
                + (f": {exc.message}" if exc.message else "")
                + ")",
                method=method,
                status=status,
                code=code,
            )
        if status == 404 or code == "not_found":
            return LiveKitNotFound(text, method=method, status=status, code=code)
        return LiveKitRejected(text, method=method, status=status, code=code)
    if isinstance(exc, TimeoutError):
        return LiveKitUnavailable(f"LiveKit {method} at {url} timed out", method=method)
    # aiohttp.ClientError covers refused and reset connections and bad responses; OSError
    # covers DNS and socket failures raised before aiohttp wraps them.
    return LiveKitUnavailable(
        f"cannot reach LiveKit at {url} for {method}: {type(exc).__name__}", method=method
    )


SERVICE_TOKEN_TTL_S = 600


def _service_auth(api_key: str, api_secret: str) -> Callable[..., dict[str, str]]:
    """A drop-in for the SDK's per-call `_auth_header`, with the same claims.

    Why: the SDK signs every call through `AccessToken.to_jwt`, whose dataclass walk costs
    about 290 µs, more than the HTTP exchange itself; a reconcile pass makes one call per
    room, so that alone was a quarter of a 10,000-room pass. This signs the same HS256 JWT
    (iss, sub, nbf, exp, video grants) in about 10 µs."""

    def auth_header(grants: VideoGrants | None, sip: Any = None) -> dict[str, str]:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": api_key, "nbf": now, "exp": now + SERVICE_TOKEN_TTL_S}
        if grants is not None:
            video: dict[str, Any] = {}
            if grants.room_admin:
                video["roomAdmin"] = True
            if grants.room_list:
                video["roomList"] = True
            if grants.room_create:
                video["roomCreate"] = True
            if grants.room:
                video["room"] = grants.room
            claims["video"] = video
        return {"authorization": "Bearer " + jwt_hs256(claims, api_secret)}

    return auth_header


def _install_fast_auth(api: LiveKitAPI, api_key: str, api_secret: str) -> None:
    auth = _service_auth(api_key, api_secret)
    for service in (api.room, api.agent_dispatch):
        # Only the grants these services use are translated above; anything else (SIP
        # grants) keeps the SDK's signer.
        original = service._auth_header

        def header(
            grants: VideoGrants | None, sip: Any = None, _original: Callable[..., dict[str, str]] = original
        ) -> dict[str, str]:
            if sip is not None:
                return _original(grants, sip)
            return auth(grants)

        service._auth_header = header  # type: ignore[method-assign]


class LiveKit:
    """Calls on one LiveKit server, valid inside the coroutine `livekit_run` runs."""

    def __init__(self, api: LiveKitAPI, *, url: str, timeout_s: float) -> None:
        self._api = api
        self.url = url
        self.timeout_s = timeout_s

    async def _call(self, method: str, awaitable: Awaitable[T]) -> T:
        try:
            # The session timeout bounds each HTTP exchange; wait_for also bounds the JWT
            # signing and anything else the SDK does around it.
            return await asyncio.wait_for(awaitable, self.timeout_s)
        except (TimeoutError, TwirpError, aiohttp.ClientError, OSError) as exc:
            raise metrics.livekit_error_counted(_translate(exc, method=method, url=self.url)) from None

    async def list_rooms(self, names: Iterable[str] = ()) -> list[LkRoom]:
        answer = await self._call("ListRooms", self._api.room.list_rooms(ListRoomsRequest(names=list(names))))
        return [_room(r) for r in answer.rooms]

    async def list_participants(self, room: str) -> list[LkParticipant]:
        answer = await self._call(
            "ListParticipants", self._api.room.list_participants(ListParticipantsRequest(room=room))
        )
        return [participant_from_proto(p) for p in answer.participants]

    async def list_dispatches(self, room: str) -> list[LkDispatch]:
        answer = await self._call("ListDispatch", self._api.agent_dispatch.list_dispatch(room))
        return [_dispatch(d) for d in answer]

    async def create_dispatch(
        self,
        room: str,
        agent_name: str,
        metadata: str,
        *,
        deployment: str = "",
        attributes: dict[str, str] | None = None,
    ) -> LkDispatch:
        request = CreateAgentDispatchRequest(
            room=room,
            agent_name=agent_name,
            metadata=metadata,
            deployment=deployment,
            attributes=attributes or {},
        )
        return _dispatch(
            await self._call("CreateDispatch", self._api.agent_dispatch.create_dispatch(request))
        )

    async def delete_room(self, room: str) -> None:
        await self._call("DeleteRoom", self._api.room.delete_room(DeleteRoomRequest(room=room)))

    async def delete_dispatch(self, room: str, dispatch_id: str) -> None:
        await self._call("DeleteDispatch", self._api.agent_dispatch.delete_dispatch(dispatch_id, room))

    async def remove_participant(self, room: str, identity: str) -> None:
        await self._call(
            "RemoveParticipant",
            self._api.room.remove_participant(RoomParticipantIdentity(room=room, identity=identity)),
        )


def livekit_run(fn: Callable[[LiveKit], Awaitable[T]], *, timeout_s: float | None = None) -> T:
    """Run `fn(client)` to completion on a new event loop; for sync callers."""
    url = settings.LIVEKIT_URL
    timeout = float(timeout_s if timeout_s is not None else settings.LIVEKIT_TIMEOUT_S)

    async def main() -> T:
        # Built here because LiveKitAPI needs a running loop. failover=False: self-hosted and
        # test servers have no regions to fail over to; retries are the callers' job.
        api = LiveKitAPI(
            url,
            settings.LIVEKIT_API_KEY,
            settings.LIVEKIT_API_SECRET,
            timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 3.0)),
            failover=False,
        )
        _install_fast_auth(api, settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
        try:
            return await fn(LiveKit(api, url=url, timeout_s=timeout))
        finally:
            await api.aclose()

    return asyncio.run(main())


def livekit_call(method: str, *args: Any, timeout_s: float | None = None) -> Any:
    """One call, e.g. `livekit_call("list_dispatches", room)`."""

    async def call(client: LiveKit) -> Any:
        return await getattr(client, method)(*args)

    return livekit_run(call, timeout_s=timeout_s)
