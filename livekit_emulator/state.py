"""The emulated LiveKit server's behaviour: rooms, participants, agent dispatches, jobs and
simulated agent workers, behaving as LiveKit does (see ../shared/LIVEKIT.md).

Nothing here knows about HTTP, Twirp or protobuf. The server translates requests into calls on
`Emulator`; `Emulator` reports room events (the ones LiveKit sends as webhooks) through the
`emit` callback, and runs its timers (worker accept delays, crashes) through the injected
`schedule` function, so the same behaviour runs on any event loop, or on a fake clock.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from .models import (
    ACTIVE_JOB_STATUSES,
    AGENT_NAME_ATTRIBUTE,
    AVAILABILITY_TIMEOUT_MS,
    DEFAULT_DEPARTURE_TIMEOUT,
    DEFAULT_EMPTY_TIMEOUT,
    WORKER_BEHAVIORS,
    DisconnectReason,
    Dispatch,
    EmulatorError,
    Faults,
    Job,
    JobStatus,
    Participant,
    ParticipantKind,
    ParticipantState,
    Room,
    RoomConfig,
    Worker,
    check_metadata,
    new_id,
)

logger = logging.getLogger("livekit_emulator")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Cancellable]
Emit = Callable[[str, Room, Participant | None], None]


class Emulator:
    """All rooms, workers and counters of one emulated server. Not thread-safe: call it
    from the event loop that runs `schedule`'s callbacks."""

    def __init__(
        self,
        *,
        schedule: Schedule,
        emit: Emit | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._schedule = schedule
        self._emit = emit or (lambda event, room, participant: None)
        self.clock = clock
        self._timers: set[Cancellable] = set()
        self._clear()

    def reset(self) -> None:
        """Forget everything, as a freshly started server; pending timers never fire."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._clear()

    def _clear(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.workers: dict[str, Worker] = {}
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        # Bounded so a long-running emulator does not grow without limit.
        self.create_dispatch_calls: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.log: deque[str] = deque(maxlen=200)
        self._active_jobs: dict[str, Job] = {}
        # Rooms without a non-dependent participant: the only ones the sweeper must look at.
        self._idle: set[str] = set()

    # -- rooms ---------------------------------------------------------------------------

    def room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            raise EmulatorError("not_found", "requested room does not exist")
        return room

    def get_or_create_room(
        self, name: str, config: RoomConfig | None = None, *, agents_source: str = "room"
    ) -> tuple[Room, bool]:
        """The named room, created from `config` if absent. An existing room keeps its own
        configuration: LiveKit applies a token's roomConfig only when the join creates the room."""
        room = self.rooms.get(name)
        if room is not None:
            return room, False
        if not name:
            raise EmulatorError("invalid_argument", "no room name")
        config = config or RoomConfig()
        check_metadata(config.metadata)
        room = Room(
            sid=new_id("RM_"),
            name=name,
            created_at=self.clock(),
            empty_timeout=config.empty_timeout or DEFAULT_EMPTY_TIMEOUT,
            departure_timeout=config.departure_timeout or DEFAULT_DEPARTURE_TIMEOUT,
            max_participants=config.max_participants,
            metadata=config.metadata,
        )
        self.rooms[name] = room
        self._idle.add(name)
        self._emit("room_started", room, None)
        if config.agents:
            for spec in config.agents:
                self._add_dispatch(room, spec.agent_name, spec.metadata, source=agents_source)
        else:
            # LiveKit gives a room created without agents one dispatch with agent_name="",
            # which is how workers registered without a name get every new room.
            self._add_dispatch(room, "", "", source="implicit")
        return room, True

    def update_room_metadata(self, name: str, metadata: str) -> Room:
        check_metadata(metadata)
        room = self.room(name)
        room.metadata = metadata
        return room

    def delete_room(self, name: str) -> None:
        self._close_room(self.room(name), DisconnectReason.ROOM_DELETED)

    def sweep(self) -> None:
        """Close rooms whose empty or departure timeout has passed; called periodically."""
        now = self.clock()
        for name in list(self._idle):
            room = self.rooms.get(name)
            if room is None:
                self._idle.discard(name)
                continue
            if room.first_joined_at and room.last_left_at:
                deadline = room.last_left_at + room.departure_timeout
            else:
                deadline = room.created_at + room.empty_timeout
            if now >= deadline:
                self._note(f"closing room {name!r}: idle timeout")
                self._close_room(room, DisconnectReason.ROOM_CLOSED)

    def _close_room(self, room: Room, reason: DisconnectReason) -> None:
        # No room_end_reason in room_finished: livekit-server v1.13.5 never sets it.
        for participant in list(room.participants.values()):
            self._remove_participant(room, participant, reason)
        for dispatch in room.dispatches.values():
            for job in dispatch.jobs:
                self._end_job(job, JobStatus.JS_SUCCESS)
        del self.rooms[room.name]
        self._idle.discard(room.name)
        self._emit("room_finished", room, None)

    # -- participants --------------------------------------------------------------------

    def join(
        self,
        room_name: str,
        identity: str,
        *,
        name: str = "",
        metadata: str = "",
        attributes: dict[str, str] | None = None,
        kind: ParticipantKind = ParticipantKind.STANDARD,
        permission: dict[str, bool] | None = None,
        config: RoomConfig | None = None,
    ) -> tuple[Participant, bool]:
        """A participant joins; returns it and whether the join created the room."""
        if not identity:
            raise EmulatorError("invalid_argument", "identity cannot be empty")
        room, created = self.get_or_create_room(room_name, config, agents_source="token")
        existing = room.participants.get(identity)
        others = room.num_participants - (1 if existing else 0)
        if room.max_participants and others >= room.max_participants:
            # LiveKit refuses the WebSocket handshake with a 500 and this text.
            raise EmulatorError("internal", "room has exceeded its max participants")
        if existing is not None:
            # LiveKit disconnects the older session of a duplicate identity.
            self._remove_participant(room, existing, DisconnectReason.DUPLICATE_IDENTITY)
        participant = Participant(
            sid=new_id("PA_"),
            identity=identity,
            name=name,
            metadata=metadata,
            attributes=dict(attributes or {}),
            kind=kind,
            joined_at=self.clock(),
            permission=dict(permission or {}),
        )
        self._add_participant(room, participant)
        return participant, created

    def participants(self, room_name: str) -> list[Participant]:
        room = self.rooms.get(room_name)
        return list(room.participants.values()) if room else []

    def participant(self, room_name: str, identity: str) -> Participant:
        room = self.rooms.get(room_name)
        participant = room.participants.get(identity) if room else None
        if participant is None:
            raise EmulatorError("not_found", "participant does not exist")
        return participant

    def remove_participant(
        self,
        room_name: str,
        identity: str,
        reason: DisconnectReason = DisconnectReason.PARTICIPANT_REMOVED,
    ) -> Participant:
        room = self.rooms.get(room_name)
        participant = room.participants.get(identity) if room else None
        if room is None or participant is None:
            raise EmulatorError("not_found", "participant not found")
        self._remove_participant(room, participant, reason)
        return participant

    def update_participant(
        self,
        room_name: str,
        identity: str,
        *,
        name: str = "",
        metadata: str = "",
        attributes: dict[str, str] | None = None,
        permission: dict[str, bool] | None = None,
    ) -> Participant:
        check_metadata(metadata)
        participant = self.participant(room_name, identity)
        if name:
            participant.name = name
        if metadata:
            participant.metadata = metadata
        for key, value in (attributes or {}).items():
            # An empty value deletes the attribute, as in LiveKit.
            if value:
                participant.attributes[key] = value
            else:
                participant.attributes.pop(key, None)
        if permission is not None:
            participant.permission = dict(permission)
        return participant

    def _add_participant(self, room: Room, participant: Participant) -> None:
        room.participants[participant.identity] = participant
        if not participant.dependent:
            room.first_joined_at = room.first_joined_at or participant.joined_at
            self._idle.discard(room.name)
        self._emit("participant_joined", room, participant)

    def _remove_participant(self, room: Room, participant: Participant, reason: DisconnectReason) -> None:
        del room.participants[participant.identity]
        participant.state = ParticipantState.DISCONNECTED
        participant.disconnect_reason = reason
        if participant.job is not None:
            # The agent left: its job is over (a no-op if the job already ended).
            self._end_job(participant.job, JobStatus.JS_SUCCESS)
        if not participant.dependent:
            room.last_left_at = self.clock()
            if all(p.dependent for p in room.participants.values()):
                self._idle.add(room.name)
        self._emit("participant_left", room, participant)

    # -- dispatches and jobs -------------------------------------------------------------

    def create_dispatch(
        self,
        room_name: str,
        agent_name: str,
        metadata: str = "",
        *,
        request_id: str = "",
        received_at: float | None = None,
    ) -> Dispatch:
        """CreateDispatch: creates the room if needed and answers at once, before any job."""
        received_at = received_at if received_at is not None else self.clock()
        room, _ = self.get_or_create_room(room_name)
        dispatch = self._add_dispatch(
            room, agent_name, metadata, source="api", request_id=request_id, received_at=received_at
        )
        self.create_dispatch_calls.append(
            {
                "request_id": request_id,
                "received_at": received_at,
                "room": room_name,
                "agent_name": agent_name,
                "dispatch_id": dispatch.id,
            }
        )
        return dispatch

    def delete_dispatch(self, room_name: str, dispatch_id: str) -> Dispatch:
        room = self.rooms.get(room_name)
        dispatch = room.dispatches.get(dispatch_id) if room else None
        if room is None or dispatch is None:
            raise EmulatorError(
                "not_found", "twirp error unknown: dispatch ID not found"
            )  # sic, as the real server says
        del room.dispatches[dispatch_id]
        for job in dispatch.jobs:
            self._end_job(job, JobStatus.JS_SUCCESS)
            agent = room.participants.get(job.participant_identity)
            if agent is not None and agent.job is job:
                self._remove_participant(room, agent, DisconnectReason.CLIENT_INITIATED)
        return dispatch

    def dispatches(self, room_name: str, dispatch_id: str = "") -> list[Dispatch]:
        room = self.rooms.get(room_name)
        if room is None:
            return []
        if dispatch_id:
            found = room.dispatches.get(dispatch_id)
            return [found] if found else []
        return list(room.dispatches.values())

    def _add_dispatch(
        self,
        room: Room,
        agent_name: str,
        metadata: str,
        *,
        source: str,
        request_id: str = "",
        received_at: float | None = None,
    ) -> Dispatch:
        dispatch = Dispatch(
            id=new_id("AD_"),
            room=room.name,
            agent_name=agent_name,
            metadata=metadata,
            created_at=self.clock(),
            source=source,
            received_at=received_at,
            request_id=request_id,
        )
        room.dispatches[dispatch.id] = dispatch
        self._offer_job(room, dispatch)
        return dispatch

    def _offer_job(self, room: Room, dispatch: Dispatch) -> None:
        """Offer the dispatch to workers registered under exactly its agent name, once.
        Nothing retries later, which is why a worker registering afterwards never gets it."""
        workers = [w for w in self.workers.values() if w.agent_name == dispatch.agent_name]
        if not workers:
            if dispatch.source == "implicit":
                return  # every room has one; without unnamed workers that is the normal case
            self._note(
                "not dispatching agent job since no worker is available "
                f"(agent_name={dispatch.agent_name!r}, dispatch={dispatch.id}, room={room.name!r})"
            )
            return
        for worker in workers:
            if worker.behavior == "reject":
                continue
            if worker.delay_ms >= AVAILABILITY_TIMEOUT_MS:
                self._note(f"worker {worker.id} did not answer the job request within 10 s")
                continue
            if worker.capacity is not None and len(worker.jobs) >= worker.capacity:
                continue
            job_id = new_id("AJ_")
            worker.jobs.add(job_id)
            self._later(
                worker.delay_ms / 1000,
                lambda w=worker, j=job_id: self._start_job(room.name, dispatch.id, w.id, j),
            )
            return
        self._note(f"no worker accepted the job (agent_name={dispatch.agent_name!r}, dispatch={dispatch.id})")

    def _start_job(self, room_name: str, dispatch_id: str, worker_id: str, job_id: str) -> None:
        worker = self.workers.get(worker_id)
        room = self.rooms.get(room_name)
        dispatch = room.dispatches.get(dispatch_id) if room else None
        if worker is None or room is None or dispatch is None:
            # The worker, room or dispatch went away while the worker was deciding.
            if worker is not None:
                worker.jobs.discard(job_id)
            return
        now = self.clock()
        job = Job(
            id=job_id,
            dispatch_id=dispatch.id,
            room=room.name,
            agent_name=dispatch.agent_name,
            metadata=dispatch.metadata,
            worker_id=worker.id,
            participant_identity=f"agent-{job_id}",
            started_at=now,
            updated_at=now,
        )
        dispatch.jobs.append(job)
        self._active_jobs[job.id] = job
        agent = Participant(
            sid=new_id("PA_"),
            identity=job.participant_identity,
            kind=ParticipantKind.AGENT,
            attributes={AGENT_NAME_ATTRIBUTE: dispatch.agent_name},
            joined_at=now,
            permission={"can_publish": True, "can_subscribe": True, "can_publish_data": True, "agent": True},
            job=job,
        )
        self._add_participant(room, agent)
        if worker.behavior == "crash":
            self._later(
                (worker.crash_after_ms or 0) / 1000,
                lambda: self._fail_job(job, "agent worker crashed (simulated by livekit_emulator)"),
            )

    def _fail_job(self, job: Job, error: str) -> None:
        """The agent died mid-job: the job fails and its participant leaves. Self-hosted
        LiveKit does not re-dispatch, so neither does the emulator."""
        if job.status not in ACTIVE_JOB_STATUSES:
            return
        self._end_job(job, JobStatus.JS_FAILED, error)
        room = self.rooms.get(job.room)
        agent = room.participants.get(job.participant_identity) if room else None
        if room is not None and agent is not None and agent.job is job:
            self._remove_participant(room, agent, DisconnectReason.AGENT_ERROR)

    def _end_job(self, job: Job, status: JobStatus, error: str = "") -> None:
        if job.status not in ACTIVE_JOB_STATUSES:
            return
        job.status = status
        job.error = error
        job.ended_at = job.updated_at = self.clock()
        self._active_jobs.pop(job.id, None)
        worker = self.workers.get(job.worker_id)
        if worker is not None:
            worker.jobs.discard(job.id)

    # -- simulated workers ---------------------------------------------------------------

    def add_worker(
        self,
        agent_name: str,
        behavior: str = "accept",
        *,
        delay_ms: float = 0,
        crash_after_ms: float | None = None,
        capacity: int | None = None,
    ) -> Worker:
        if behavior not in WORKER_BEHAVIORS:
            raise EmulatorError("invalid_argument", f"behavior must be one of {', '.join(WORKER_BEHAVIORS)}")
        if delay_ms < 0 or (crash_after_ms is not None and crash_after_ms < 0):
            raise EmulatorError("invalid_argument", "delays must not be negative")
        if capacity is not None and capacity < 0:
            raise EmulatorError("invalid_argument", "capacity must not be negative")
        worker = Worker(
            id=new_id("AW_"),
            agent_name=agent_name,
            behavior=behavior,
            delay_ms=delay_ms,
            crash_after_ms=crash_after_ms,
            capacity=capacity,
            registered_at=self.clock(),
        )
        self.workers[worker.id] = worker
        self._note(f"worker {worker.id} registered (agent_name={agent_name!r}, behavior={behavior})")
        return worker

    def remove_workers(self, agent_name: str) -> list[Worker]:
        """Unregister every worker of that agent name; their running jobs fail."""
        removed = [w for w in self.workers.values() if w.agent_name == agent_name]
        for worker in removed:
            del self.workers[worker.id]
            for job_id in list(worker.jobs):
                job = self._active_jobs.get(job_id)
                if job is not None:
                    self._fail_job(job, "agent worker disconnected")
        return removed

    # -- helpers -------------------------------------------------------------------------

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        def run() -> None:
            self._timers.discard(handle)
            callback()

        handle = self._schedule(delay, run)
        self._timers.add(handle)

    def _note(self, message: str) -> None:
        logger.info(message)
        self.log.append(message)
