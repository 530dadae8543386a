"""The records the emulated LiveKit server keeps, as plain dataclasses: rooms, participants,
agent dispatches, jobs, simulated workers and fault switches, with LiveKit's ids, defaults,
limits and enum values. Behaviour lives in `state.py`."""

from __future__ import annotations

import enum
import random
import secrets
import string
from dataclasses import dataclass, field
from typing import Protocol

# LiveKit's defaults and limits.
DEFAULT_EMPTY_TIMEOUT = 300.0
DEFAULT_DEPARTURE_TIMEOUT = 20.0
MAX_METADATA_BYTES = 512 * 1024
AGENT_NAME_ATTRIBUTE = "lk.agent_name"
# How long LiveKit waits for a worker to answer a job request before trying the next one.
AVAILABILITY_TIMEOUT_MS = 10_000

WORKER_BEHAVIORS = ("accept", "reject", "crash")
# A worker connected over `/agent` (a real livekit-agents worker) rather than simulated.
REMOTE = "remote"

_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_ids = random.Random()


def new_id(prefix: str) -> str:
    """An id shaped like LiveKit's guids: a type prefix and 12 base57 characters."""
    return prefix + "".join(_ids.choices(_ID_ALPHABET, k=12))


# Enum values are the protobuf ones, so the protocol layer can pass them through unchanged.
class ParticipantKind(enum.IntEnum):
    STANDARD = 0
    INGRESS = 1
    EGRESS = 2
    SIP = 3
    AGENT = 4


class ParticipantState(enum.IntEnum):
    JOINING = 0
    JOINED = 1
    ACTIVE = 2
    DISCONNECTED = 3


class JobStatus(enum.IntEnum):
    JS_PENDING = 0
    JS_RUNNING = 1
    JS_SUCCESS = 2
    JS_FAILED = 3
    JS_CANCELLED = 4


class DisconnectReason(enum.IntEnum):
    UNKNOWN_REASON = 0
    CLIENT_INITIATED = 1
    DUPLICATE_IDENTITY = 2
    SERVER_SHUTDOWN = 3
    PARTICIPANT_REMOVED = 4
    ROOM_DELETED = 5
    SIGNAL_CLOSE = 9
    ROOM_CLOSED = 10
    AGENT_ERROR = 16


# Agents and egress do not keep a room open: LiveKit closes a room whose only
# participants are these "dependent" ones once its timeout passes.
DEPENDENT_KINDS = frozenset({ParticipantKind.AGENT, ParticipantKind.EGRESS})
ACTIVE_JOB_STATUSES = frozenset({JobStatus.JS_PENDING, JobStatus.JS_RUNNING})


class EmulatorError(Exception):
    """A failure reported to the API caller; `code` is a Twirp error code."""

    def __init__(self, code: str, message: str, meta: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.meta = meta or {}


def check_metadata(metadata: str) -> None:
    if len(metadata.encode()) > MAX_METADATA_BYTES:
        # Same shape as twirp.InvalidArgumentError(ErrMetadataExceedsLimits, limit) in LiveKit.
        argument = "metadata size exceeds limits"
        raise EmulatorError("invalid_argument", f"{argument} {MAX_METADATA_BYTES}", {"argument": argument})


@dataclass(slots=True)
class AgentSpec:
    agent_name: str = ""
    metadata: str = ""
    deployment: str = ""


@dataclass(slots=True)
class RoomConfig:
    """What a room is created with; zero timeouts mean the server defaults, as in LiveKit."""

    empty_timeout: float = 0.0
    departure_timeout: float = 0.0
    max_participants: int = 0
    metadata: str = ""
    agents: list[AgentSpec] = field(default_factory=list)


@dataclass(slots=True)
class Job:
    id: str
    dispatch_id: str
    room: str
    agent_name: str
    metadata: str
    worker_id: str
    participant_identity: str
    deployment: str = ""
    status: JobStatus = JobStatus.JS_RUNNING
    error: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0
    updated_at: float = 0.0


@dataclass(slots=True)
class Participant:
    sid: str
    identity: str
    name: str = ""
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    kind: ParticipantKind = ParticipantKind.STANDARD
    state: ParticipantState = ParticipantState.ACTIVE
    joined_at: float = 0.0
    permission: dict[str, bool] = field(default_factory=dict)
    disconnect_reason: DisconnectReason = DisconnectReason.UNKNOWN_REASON
    job: Job | None = field(default=None, repr=False)

    @property
    def dependent(self) -> bool:
        return self.kind in DEPENDENT_KINDS


@dataclass(slots=True)
class Dispatch:
    id: str
    room: str
    agent_name: str
    metadata: str
    created_at: float
    # "api" (CreateDispatch), "token" (a join token's roomConfig), "room" (CreateRoom agents
    # or the control API) or "implicit" (the agent_name="" dispatch of a room without agents).
    source: str
    received_at: float | None = None
    request_id: str = ""
    deployment: str = ""
    jobs: list[Job] = field(default_factory=list)


# The real server's `twirp error unknown: ` prefix: its RoomService errors pass through psrpc,
# which wraps them once more on the way out.
UNKNOWN = "twirp error unknown: "
ROOM_NOT_FOUND = UNKNOWN + "requested room does not exist"
PARTICIPANT_NOT_FOUND = UNKNOWN + "participant does not exist"
# What the real server answers, after its 3 s routing timeout, for a call that must reach the node
# hosting a room or participant that does not exist.
NO_RESPONSE = UNKNOWN + "no response from servers"


def new_turn_password() -> str:
    """A random TURN password, as LiveKit gives every room (44 alphanumerics)."""
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(44))


@dataclass(slots=True)
class Room:
    sid: str
    name: str
    created_at: float
    empty_timeout: float
    departure_timeout: float
    max_participants: int = 0
    metadata: str = ""
    participants: dict[str, Participant] = field(default_factory=dict)
    dispatches: dict[str, Dispatch] = field(default_factory=dict)
    first_joined_at: float = 0.0
    last_left_at: float = 0.0
    turn_password: str = field(default_factory=new_turn_password)

    @property
    def num_participants(self) -> int:
        return len(self.participants)


@dataclass(slots=True)
class Worker:
    id: str
    agent_name: str
    behavior: str
    delay_ms: float
    crash_after_ms: float | None
    capacity: int | None
    registered_at: float
    # Jobs this worker has accepted or is about to start; counted against `capacity`.
    jobs: set[str] = field(default_factory=set)
    deployment: str = ""
    # A real worker's socket (behavior REMOTE); None for a simulated one.
    link: WorkerLink | None = field(default=None, repr=False)
    # What a real worker last reported (UpdateWorkerStatus): LiveKit offers jobs only to an
    # available worker whose load is under 1.
    available: bool = True
    load: float = 0.0
    version: str = ""
    # When its last UpdateWorkerStatus arrived (livekit-agents sends one every 2.5 s).
    status_at: float = 0.0

    @property
    def remote(self) -> bool:
        return self.link is not None


class WorkerLink(Protocol):
    """How the state talks to a real worker's socket (livekit_emulator/agents.py)."""

    def offer(self, job: Job, room: Room) -> None: ...

    def assign(self, job: Job, room: Room, token: AgentToken) -> None: ...

    def terminate(self, job_id: str) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class AgentToken:
    """What the worker's availability answer asks the job's participant token to carry."""

    identity: str
    name: str = ""
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class WorkerFaults:
    """Switches on the job hand-over, for simulated and real workers alike: refuse every job
    request as if no worker were available, lose the JobAssignment after the worker accepted
    (the job is recorded as running, the worker never hears of it), or send it late."""

    refuse_availability: bool = False
    drop_assignment: bool = False
    assignment_delay_ms: float = 0.0


@dataclass(slots=True)
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int | None = None
    timeout_rate: float = 0.0
    down: bool = False
