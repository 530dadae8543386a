"""The records the emulated LiveKit server keeps, as plain dataclasses: rooms, participants,
agent dispatches, jobs, simulated workers and fault switches, with LiveKit's ids, defaults,
limits and enum values. Behaviour lives in `state.py`."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

# LiveKit's defaults and limits.
DEFAULT_EMPTY_TIMEOUT = 300.0
DEFAULT_DEPARTURE_TIMEOUT = 20.0
MAX_METADATA_BYTES = 512 * 1024
AGENT_NAME_ATTRIBUTE = "lk.agent_name"
# How long LiveKit waits for a worker to answer a job request before trying the next one.
AVAILABILITY_TIMEOUT_MS = 10_000

WORKER_BEHAVIORS = ("accept", "reject", "crash")

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
    PARTICIPANT_REMOVED = 4
    ROOM_DELETED = 5
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
    jobs: list[Job] = field(default_factory=list)


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


@dataclass(slots=True)
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int | None = None
    timeout_rate: float = 0.0
    down: bool = False
