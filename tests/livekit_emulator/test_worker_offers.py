"""How the state hands jobs to real workers (the `/agent` socket's side of state.py), on an
injected clock: who is asked, in what order, what happens on a decline, on 10 s of silence,
on a full worker, on a worker that goes away, and what a worker is told when its job ends.
test_real_workers.py runs the same with livekit-agents over the socket; this file covers the
timings a real worker cannot be made to show quickly."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from livekit_emulator.models import AgentToken, Job, JobStatus, Room
from livekit_emulator.state import Emulator


@dataclass(eq=False)  # the state keeps its timers in a set
class Timer:
    due: float
    callback: object
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Clock:
    now: float = 1000.0
    timers: list[Timer] = field(default_factory=list)

    def schedule(self, delay: float, callback) -> Timer:
        timer = Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = [t for t in self.timers if not t.cancelled and t.due <= end]
            if not due:
                break
            timer = min(due, key=lambda t: t.due)
            self.timers.remove(timer)
            self.now = timer.due
            timer.callback()
        self.now = end


@dataclass
class Link:
    """A worker socket that records what the state sends it."""

    sent: list[tuple[str, str]] = field(default_factory=list)
    tokens: list[AgentToken] = field(default_factory=list)
    closed: bool = False

    def offer(self, job: Job, room: Room) -> None:
        self.sent.append(("offer", job.id))

    def assign(self, job: Job, room: Room, token: AgentToken) -> None:
        self.sent.append(("assign", job.id))
        self.tokens.append(token)

    def terminate(self, job_id: str) -> None:
        self.sent.append(("terminate", job_id))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator(clock) -> Emulator:
    return Emulator(schedule=clock.schedule, clock=lambda: clock.now)


def _register(emulator: Emulator, name: str = "triage", deployment: str = "") -> tuple[str, Link]:
    link = Link()
    worker = emulator.register_worker(name, deployment=deployment, version="1.8.9", link=link)
    return worker.id, link


def _offered(link: Link) -> list[str]:
    return [job_id for kind, job_id in link.sent if kind == "offer"]


def _accept(emulator: Emulator, worker_id: str, job_id: str, identity: str = "agent-x") -> None:
    emulator.worker_availability(
        worker_id, job_id, available=True, terminate=False, token=AgentToken(identity=identity)
    )


def _jobs(emulator: Emulator, room: str) -> list[Job]:
    return [job for d in emulator.dispatches(room) for job in d.jobs]


def test_an_accepted_offer_is_listed_and_assigned_with_the_agent_name_attribute(emulator):
    worker_id, link = _register(emulator)
    emulator.create_dispatch("r", "triage", '{"case": 1}')
    [job_id] = _offered(link)
    assert _jobs(emulator, "r") == []  # nothing is listed while the worker decides

    _accept(emulator, worker_id, job_id, identity="agent-AJ_1")

    [job] = _jobs(emulator, "r")
    assert (job.id, job.status, job.participant_identity, job.worker_id) == (
        job_id,
        JobStatus.JS_RUNNING,
        "agent-AJ_1",
        worker_id,
    )
    assert link.sent[-1] == ("assign", job_id)
    assert link.tokens[0].attributes == {"lk.agent_name": "triage"}


def test_a_declined_offer_goes_to_the_next_worker(emulator):
    first_id, first = _register(emulator)
    second_id, second = _register(emulator)
    emulator.create_dispatch("r", "triage")
    [job_id] = _offered(first)

    emulator.worker_availability(first_id, job_id, available=False, terminate=False, token=AgentToken(""))

    [second_job] = _offered(second)
    _accept(emulator, second_id, second_job)
    assert [j.worker_id for j in _jobs(emulator, "r")] == [second_id]
    assert ("assign", job_id) not in first.sent


def test_ten_silent_seconds_pass_the_offer_on(emulator, clock):
    _, silent = _register(emulator)
    _, second = _register(emulator)
    emulator.create_dispatch("r", "triage")

    clock.advance(9.9)
    assert _offered(second) == []
    clock.advance(0.2)

    assert len(_offered(second)) == 1
    assert any("did not answer the job request within 10 s" in line for line in emulator.log)


def test_a_late_answer_after_the_timeout_changes_nothing(emulator, clock):
    silent_id, silent = _register(emulator)
    emulator.create_dispatch("r", "triage")
    [job_id] = _offered(silent)
    clock.advance(10.1)

    _accept(emulator, silent_id, job_id)

    assert _jobs(emulator, "r") == [] and ("assign", job_id) not in silent.sent


def test_a_full_or_loaded_worker_is_not_asked(emulator):
    full_id, full = _register(emulator)
    loaded_id, loaded = _register(emulator)
    emulator.worker_status(full_id, available=False, load=0.0)
    emulator.worker_status(loaded_id, available=True, load=1.0)

    emulator.create_dispatch("r", "triage")

    assert _offered(full) == [] and _offered(loaded) == []
    assert any("no worker accepted the job" in line for line in emulator.log)


def test_a_worker_going_away_mid_offer_passes_it_on_and_fails_its_running_jobs(emulator):
    going_id, going = _register(emulator)
    emulator.create_dispatch("running", "triage")
    _accept(emulator, going_id, _offered(going)[0])
    emulator.create_dispatch("pending", "triage")
    staying_id, staying = _register(emulator)

    emulator.unregister_worker(going_id)

    [failed] = _jobs(emulator, "running")
    assert (failed.status, failed.error) == (JobStatus.JS_FAILED, "agent worker disconnected")
    assert len(_offered(staying)) == 1  # the pending room's offer moved on


def test_deleting_the_dispatch_or_the_room_terminates_running_jobs(emulator):
    worker_id, link = _register(emulator)
    dispatch = emulator.create_dispatch("a", "triage")
    _accept(emulator, worker_id, _offered(link)[0])
    emulator.create_dispatch("b", "triage")
    _accept(emulator, worker_id, _offered(link)[1])
    [job_a], [job_b] = _jobs(emulator, "a"), _jobs(emulator, "b")

    emulator.delete_dispatch("a", dispatch.id)
    emulator.delete_room("b")

    assert ("terminate", job_a.id) in link.sent and ("terminate", job_b.id) in link.sent
    assert job_a.status == job_b.status == JobStatus.JS_SUCCESS


def test_the_worker_job_updates_are_recorded(emulator):
    worker_id, link = _register(emulator)
    emulator.create_dispatch("r", "triage")
    job_id = _offered(link)[0]
    _accept(emulator, worker_id, job_id)

    emulator.worker_job_update(worker_id, job_id, JobStatus.JS_FAILED, "entrypoint raised")
    emulator.worker_job_update("AW_someoneelse", job_id, JobStatus.JS_SUCCESS, "")

    [job] = _jobs(emulator, "r")
    assert (job.status, job.error) == (JobStatus.JS_FAILED, "entrypoint raised")


def test_the_deployment_must_match_exactly(emulator):
    _, deployed = _register(emulator, deployment="blue")
    _, plain = _register(emulator)

    emulator.create_dispatch("no-deployment", "triage")
    emulator.create_dispatch("green", "triage", deployment="green")

    assert _offered(deployed) == [] and len(_offered(plain)) == 1
    assert sum("not dispatching agent job since no worker is available" in line for line in emulator.log) == 1


def test_the_hand_over_faults(emulator, clock):
    worker_id, link = _register(emulator)
    emulator.worker_faults.refuse_availability = True
    emulator.create_dispatch("refused", "triage")
    assert _offered(link) == []

    emulator.worker_faults.refuse_availability = False
    emulator.worker_faults.assignment_delay_ms = 500
    emulator.create_dispatch("late", "triage")
    job_id = _offered(link)[0]
    _accept(emulator, worker_id, job_id)
    assert ("assign", job_id) not in link.sent
    clock.advance(0.5)
    assert ("assign", job_id) in link.sent

    emulator.worker_faults.assignment_delay_ms = 0
    emulator.worker_faults.drop_assignment = True
    emulator.create_dispatch("lost", "triage")
    lost = _offered(link)[1]
    _accept(emulator, worker_id, lost)
    clock.advance(60)
    assert ("assign", lost) not in link.sent
    assert [j.status for j in _jobs(emulator, "lost")] == [JobStatus.JS_RUNNING]


def test_a_reset_closes_real_workers_sockets(emulator):
    _, link = _register(emulator)

    emulator.reset()

    assert link.closed and emulator.workers == {}
