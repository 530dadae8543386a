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
from dataclasses import dataclass
from typing import Any, Protocol

from .models import (
    ACTIVE_JOB_STATUSES,
    AGENT_NAME_ATTRIBUTE,
    AVAILABILITY_TIMEOUT_MS,
    DEFAULT_DEPARTURE_TIMEOUT,
    DEFAULT_EMPTY_TIMEOUT,
    PARTICIPANT_NOT_FOUND,
    REMOTE,
    ROOM_NOT_FOUND,
    WORKER_BEHAVIORS,
    AgentToken,
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
    WorkerFaults,
    WorkerLink,
    check_metadata,
    new_id,
)

logger = logging.getLogger("livekit_emulator")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Cancellable]
Emit = Callable[[str, Room, Participant | None], None]


@dataclass(slots=True)
class _Offer:
    """A job request sent to a real worker: the job it would become, the workers already asked."""

    job: Job
    tried: frozenset[str]
    timer: Cancellable | None = None


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
        """Forget everything, as a freshly started server; pending timers never fire and real
        workers' sockets are closed (a livekit-agents worker then reconnects and registers anew)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        links = [w.link for w in self.workers.values() if w.link is not None]
        self._clear()
        for link in links:
            link.close()

    def _clear(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.workers: dict[str, Worker] = {}
        self.faults = Faults()
        self.worker_faults = WorkerFaults()
        self.requests: Counter[str] = Counter()
        # Bounded so a long-running emulator does not grow without limit.
        self.create_dispatch_calls: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.log: deque[str] = deque(maxlen=200)
        self._active_jobs: dict[str, Job] = {}
        # Job requests sent to real workers, awaiting their availability answer.
        self._offers: dict[str, _Offer] = {}
        # Rooms without a non-dependent participant: the only ones the sweeper must look at.
        self._idle: set[str] = set()

    # -- rooms ---------------------------------------------------------------------------

    def room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            raise EmulatorError("not_found", ROOM_NOT_FOUND)
        return room

    def get_or_create_room(
        self, name: str, config: RoomConfig | None = None, *, agents_source: str = "room"
    ) -> tuple[Room, bool]:
        """The named room, created from `config` if absent. An existing room keeps its own
        configuration: LiveKit applies a token's roomConfig only when the join creates the room.
        The name may be "": CreateRoom makes a room named "" on the real server too."""
        room = self.rooms.get(name)
        if room is not None:
            return room, False
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
                self._add_dispatch(
                    room, spec.agent_name, spec.metadata, source=agents_source, deployment=spec.deployment
                )
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
                self._terminate_job(job)
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
        if not room_name:
            raise EmulatorError("invalid_argument", "no room name")
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
            job=self._job_of(room_name, identity) if kind == ParticipantKind.AGENT else None,
        )
        self._add_participant(room, participant)
        return participant, created

    def _job_of(self, room_name: str, identity: str) -> Job | None:
        """The running job whose agent this is: a real worker's job process joining with the
        token of its assignment. Its leaving then ends the job, as a simulated agent's does."""
        for job in self._active_jobs.values():
            if job.room == room_name and job.participant_identity == identity:
                return job
        return None

    def participants(self, room_name: str) -> list[Participant]:
        room = self.rooms.get(room_name)
        return list(room.participants.values()) if room else []

    def participant(self, room_name: str, identity: str) -> Participant:
        room = self.rooms.get(room_name)
        participant = room.participants.get(identity) if room else None
        if participant is None:
            raise EmulatorError("not_found", PARTICIPANT_NOT_FOUND)
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
            raise EmulatorError("not_found", PARTICIPANT_NOT_FOUND)
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
        deployment: str = "",
        request_id: str = "",
        received_at: float | None = None,
    ) -> Dispatch:
        """CreateDispatch: creates the room if needed and answers at once, before any job."""
        received_at = received_at if received_at is not None else self.clock()
        room, _ = self.get_or_create_room(room_name)
        dispatch = self._add_dispatch(
            room,
            agent_name,
            metadata,
            source="api",
            deployment=deployment,
            request_id=request_id,
            received_at=received_at,
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
            self._terminate_job(job)
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
        deployment: str = "",
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
            deployment=deployment,
        )
        room.dispatches[dispatch.id] = dispatch
        self._offer_job(room, dispatch)
        return dispatch

    def _offer_job(self, room: Room, dispatch: Dispatch, tried: frozenset[str] = frozenset()) -> None:
        """Offer the dispatch to workers registered under exactly its agent name and deployment,
        once. Nothing retries later, which is why a worker registering afterwards never gets it.
        A real worker is asked over its socket and answers later (`worker_availability`); if it
        declines or stays silent for 10 s, the next worker is asked, as LiveKit does."""
        workers = [
            w
            for w in self.workers.values()
            if w.agent_name == dispatch.agent_name and w.deployment == dispatch.deployment
        ]
        if not workers:
            if dispatch.source == "implicit":
                return  # every room has one; without unnamed workers that is the normal case
            self._note(
                "not dispatching agent job since no worker is available "
                f"(agent_name={dispatch.agent_name!r}, dispatch={dispatch.id}, room={room.name!r})"
            )
            return
        for worker in workers:
            if worker.id in tried:
                continue
            if self.worker_faults.refuse_availability:
                self._note(f"worker {worker.id} refused the job request (refuse_availability fault)")
                continue
            if worker.remote:
                if not worker.available or worker.load >= 1:
                    continue
                self._ask_remote(worker, room, dispatch, tried)
                return
            if worker.behavior == "reject":
                continue
            if worker.delay_ms >= AVAILABILITY_TIMEOUT_MS:
                self._note(f"worker {worker.id} did not answer the job request within 10 s")
                continue
            if worker.capacity is not None and len(worker.jobs) >= worker.capacity:
                continue
            job_id = new_id("AJ_")
            worker.jobs.add(job_id)
            if self.worker_faults.drop_assignment:
                self._note(f"job {job_id} assignment to worker {worker.id} dropped (drop_assignment fault)")
                return
            delay = (worker.delay_ms + self.worker_faults.assignment_delay_ms) / 1000
            self._later(delay, lambda w=worker, j=job_id: self._start_job(room.name, dispatch.id, w.id, j))
            return
        self._note(f"no worker accepted the job (agent_name={dispatch.agent_name!r}, dispatch={dispatch.id})")

    def _ask_remote(self, worker: Worker, room: Room, dispatch: Dispatch, tried: frozenset[str]) -> None:
        assert worker.link is not None
        job = self._new_job(new_id("AJ_"), room, dispatch, worker, identity="")
        worker.jobs.add(job.id)  # reserved while the worker decides
        offer = _Offer(job=job, tried=tried | {worker.id})
        self._offers[job.id] = offer
        offer.timer = self._later(AVAILABILITY_TIMEOUT_MS / 1000, lambda: self._offer_unanswered(job.id))
        worker.link.offer(job, room)

    def _offer_unanswered(self, job_id: str) -> None:
        offer = self._offers.pop(job_id, None)
        if offer is None:
            return
        self._note(f"worker {offer.job.worker_id} did not answer the job request within 10 s")
        self._offer_next(offer)

    def _offer_next(self, offer: _Offer) -> None:
        worker = self.workers.get(offer.job.worker_id)
        if worker is not None:
            worker.jobs.discard(offer.job.id)
        room = self.rooms.get(offer.job.room)
        dispatch = room.dispatches.get(offer.job.dispatch_id) if room else None
        if room is not None and dispatch is not None:
            self._offer_job(room, dispatch, offer.tried)

    def _new_job(self, job_id: str, room: Room, dispatch: Dispatch, worker: Worker, *, identity: str) -> Job:
        now = self.clock()
        return Job(
            id=job_id,
            dispatch_id=dispatch.id,
            room=room.name,
            agent_name=dispatch.agent_name,
            metadata=dispatch.metadata,
            worker_id=worker.id,
            participant_identity=identity,
            deployment=dispatch.deployment,
            started_at=now,
            updated_at=now,
        )

    def _start_job(self, room_name: str, dispatch_id: str, worker_id: str, job_id: str) -> None:
        worker = self.workers.get(worker_id)
        room = self.rooms.get(room_name)
        dispatch = room.dispatches.get(dispatch_id) if room else None
        if worker is None or room is None or dispatch is None:
            # The worker, room or dispatch went away while the worker was deciding.
            if worker is not None:
                worker.jobs.discard(job_id)
            return
        job = self._new_job(job_id, room, dispatch, worker, identity=f"agent-{job_id}")
        now = job.started_at
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

    def _terminate_job(self, job: Job) -> None:
        """The room closed or the dispatch was deleted: a real worker is told to end the job."""
        if job.status in ACTIVE_JOB_STATUSES:
            worker = self.workers.get(job.worker_id)
            if worker is not None and worker.link is not None:
                worker.link.terminate(job.id)
        self._end_job(job, JobStatus.JS_SUCCESS)

    # -- real workers (the /agent socket) --------------------------------------------------

    def register_worker(self, agent_name: str, *, deployment: str, version: str, link: WorkerLink) -> Worker:
        """A real worker registered over `/agent`."""
        worker = Worker(
            id=new_id("AW_"),
            agent_name=agent_name,
            behavior=REMOTE,
            delay_ms=0,
            crash_after_ms=None,
            capacity=None,
            registered_at=self.clock(),
            deployment=deployment,
            link=link,
            version=version,
        )
        self.workers[worker.id] = worker
        self._note(
            f"worker {worker.id} registered (agent_name={agent_name!r}, deployment={deployment!r}, real)"
        )
        return worker

    def unregister_worker(self, worker_id: str) -> None:
        """A real worker's socket closed: its running jobs fail, its open job requests go to
        the next worker. A no-op for a worker the state no longer knows (after a reset)."""
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return
        self._note(f"worker {worker_id} unregistered")
        for job_id in list(worker.jobs):
            offer = self._offers.pop(job_id, None)
            if offer is not None:
                if offer.timer is not None:
                    offer.timer.cancel()
                self._offer_next(offer)
            job = self._active_jobs.get(job_id)
            if job is not None:
                self._fail_job(job, "agent worker disconnected")

    def worker_availability(
        self, worker_id: str, job_id: str, *, available: bool, terminate: bool, token: AgentToken
    ) -> None:
        """A real worker's answer to a job request."""
        offer = self._offers.get(job_id)
        if offer is None or offer.job.worker_id != worker_id:
            self._note(f"availability answer for an unknown job {job_id} from worker {worker_id}")
            return
        del self._offers[job_id]
        if offer.timer is not None:
            offer.timer.cancel()
        worker = self.workers.get(worker_id)
        room = self.rooms.get(offer.job.room)
        dispatch = room.dispatches.get(offer.job.dispatch_id) if room else None
        if worker is None or room is None or dispatch is None or terminate:
            if worker is not None:
                worker.jobs.discard(job_id)
            return
        if not available:
            self._note(f"worker {worker_id} is not available for job {job_id}")
            self._offer_next(offer)
            return
        job = offer.job
        job.participant_identity = token.identity
        job.started_at = job.updated_at = self.clock()
        dispatch.jobs.append(job)
        self._active_jobs[job.id] = job
        if self.worker_faults.drop_assignment:
            self._note(f"job {job.id} assignment to worker {worker_id} dropped (drop_assignment fault)")
            return
        token.attributes = {**token.attributes, AGENT_NAME_ATTRIBUTE: worker.agent_name}
        link = worker.link
        assert link is not None
        delay = self.worker_faults.assignment_delay_ms / 1000
        if delay:
            self._later(delay, lambda: link.assign(job, room, token))
        else:
            link.assign(job, room, token)

    def worker_job_update(self, worker_id: str, job_id: str, status: JobStatus, error: str) -> None:
        """A real worker's UpdateJobStatus. Unlike livekit-server v1.13.5, which leaves the
        dispatch's job `JS_RUNNING` whatever the worker reports, the emulator records it."""
        job = self._active_jobs.get(job_id)
        if job is None or job.worker_id != worker_id:
            return
        if status in ACTIVE_JOB_STATUSES:
            job.status = status
            job.updated_at = self.clock()
            return
        if status == JobStatus.JS_FAILED:
            self._fail_job(job, error or "job failed")
        else:
            self._end_job(job, status, error)

    def worker_status(self, worker_id: str, *, available: bool, load: float) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None:
            worker.available, worker.load, worker.status_at = available, load, self.clock()

    def disconnect_worker(self, worker_id: str) -> Worker:
        """The kill-socket fault: close a real worker's socket (it unregisters when the socket
        ends), or unregister a simulated one."""
        worker = self.workers.get(worker_id)
        if worker is None:
            raise EmulatorError("not_found", f"no worker {worker_id}")
        if worker.link is not None:
            worker.link.close()
        else:
            del self.workers[worker_id]
            for job_id in list(worker.jobs):
                job = self._active_jobs.get(job_id)
                if job is not None:
                    self._fail_job(job, "agent worker disconnected")
        return worker

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
        """Unregister every worker of that agent name; their running jobs fail. A real worker's
        socket is closed (it goes when the socket ends, and its process may reconnect)."""
        removed = [w for w in self.workers.values() if w.agent_name == agent_name]
        for worker in removed:
            self.disconnect_worker(worker.id)
        return removed

    # -- helpers -------------------------------------------------------------------------

    def _later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        def run() -> None:
            self._timers.discard(handle)
            callback()

        handle = self._schedule(delay, run)
        self._timers.add(handle)
        return handle

    def note(self, message: str) -> None:
        """A line for the log (the real server's log lines the tests look for)."""
        self._note(message)

    def _note(self, message: str) -> None:
        logger.info(message)
        self.log.append(message)
