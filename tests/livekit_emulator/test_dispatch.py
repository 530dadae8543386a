"""Agent dispatch and simulated workers: when a job appears, and the failure modes users hit."""

from __future__ import annotations

import time

import pytest
from livekit import api

from .support import call, eventually, join, join_token, room_names, server_log

AGENT_KIND = api.ParticipantInfo.Kind.AGENT
SIMULATED = "a simulated worker behaviour the real worker program does not have"


def _dispatch(server, room: str, agent_name: str, metadata: str = "") -> api.AgentDispatch:
    request = api.CreateAgentDispatchRequest(room=room, agent_name=agent_name, metadata=metadata)
    return call(server, lambda lk: lk.agent_dispatch.create_dispatch(request))


def _named(server, room: str, agent_name: str) -> list[api.AgentDispatch]:
    dispatches = call(server, lambda lk: lk.agent_dispatch.list_dispatch(room))
    return [d for d in dispatches if d.agent_name == agent_name]


def _jobs(server, room: str, agent_name: str) -> list:
    return [job for d in _named(server, room, agent_name) for job in d.state.jobs]


def _agents(server, room: str) -> list[api.ParticipantInfo]:
    listed = call(server, lambda lk: lk.room.list_participants(api.ListParticipantsRequest(room=room)))
    return [p for p in listed.participants if p.kind == AGENT_KIND]


def test_create_dispatch_creates_the_room_and_answers_before_any_job(livekit_server, add_worker):
    add_worker("triage")
    before = time.time_ns()

    dispatch = _dispatch(livekit_server, "fresh", "triage", metadata='{"case": 1}')

    assert dispatch.id.startswith("AD_") and dispatch.room == "fresh"
    assert list(dispatch.state.jobs) == []
    assert before <= dispatch.state.created_at <= time.time_ns()  # nanoseconds
    assert "fresh" in room_names(livekit_server)


def test_an_accepting_worker_runs_the_job_and_its_agent_joins(livekit_server, add_worker):
    worker_id = add_worker("triage")
    dispatch = _dispatch(livekit_server, "call-1", "triage", metadata='{"case": 1}')

    [job] = eventually(lambda: _jobs(livekit_server, "call-1", "triage"), timeout=20)

    assert job.id.startswith("AJ_") and job.dispatch_id == dispatch.id
    assert job.metadata == '{"case": 1}'  # the dispatch metadata reaches the job, not the room
    assert job.state.status == api.JobStatus.JS_RUNNING
    assert job.state.participant_identity == f"agent-{job.id}"
    assert job.state.worker_id == worker_id and worker_id.startswith("AW_")
    [agent] = eventually(lambda: _agents(livekit_server, "call-1"), timeout=20)
    assert agent.identity == job.state.participant_identity
    assert agent.attributes["lk.agent_name"] == "triage"


@pytest.mark.emulator_only(SIMULATED)
def test_a_worker_accepts_after_its_delay(livekit_server):
    livekit_server.control.add_worker("slow", delay_ms=300)
    sent = time.monotonic()
    _dispatch(livekit_server, "call-2", "slow")

    eventually(lambda: _jobs(livekit_server, "call-2", "slow"))

    assert time.monotonic() - sent >= 0.3


def test_no_worker_means_no_job_even_if_one_registers_later(livekit_server, add_worker):
    # A name no other test registers: on the real server named workers live for the session.
    _dispatch(livekit_server, "orphan", "latecomer")
    add_worker("latecomer")
    join(livekit_server, join_token(livekit_server, "elsewhere", "probe", agents=[("latecomer", "")]))
    # The later dispatch gets its agent; by then the first one would have too.
    eventually(lambda: _jobs(livekit_server, "elsewhere", "latecomer"), timeout=20)

    assert _jobs(livekit_server, "orphan", "latecomer") == []
    assert "not dispatching agent job since no worker is available" in server_log(livekit_server)


def test_a_worker_must_match_the_agent_name_exactly(livekit_server, add_worker):
    add_worker("triage-agent")
    _dispatch(livekit_server, "typo", "triage_agent")
    _dispatch(livekit_server, "exact", "triage-agent")

    eventually(lambda: _jobs(livekit_server, "exact", "triage-agent"), timeout=20)

    assert _jobs(livekit_server, "typo", "triage_agent") == []


@pytest.mark.emulator_only(SIMULATED)
def test_a_rejecting_worker_leaves_the_dispatch_without_jobs(livekit_server):
    livekit_server.control.add_worker("picky", behavior="reject")
    livekit_server.control.add_worker("marker")
    _dispatch(livekit_server, "rejected", "picky")
    _dispatch(livekit_server, "rejected", "marker")

    eventually(lambda: _jobs(livekit_server, "rejected", "marker"))

    assert _jobs(livekit_server, "rejected", "picky") == []


@pytest.mark.emulator_only("a simulated crash after joining")
def test_a_crashed_agent_fails_its_job_and_nobody_redispatches(livekit_server):
    livekit_server.control.add_worker("fragile", behavior="crash", crash_after_ms=50)
    livekit_server.control.add_worker("fragile")  # a healthy worker of the same name stays idle
    _dispatch(livekit_server, "crash-room", "fragile")

    def failed_jobs():
        jobs = _jobs(livekit_server, "crash-room", "fragile")
        return [j for j in jobs if j.state.status == api.JobStatus.JS_FAILED]

    [job] = eventually(failed_jobs)
    # Let the emulator do more work, as a re-dispatch would have by then.
    livekit_server.control.add_worker("marker")
    _dispatch(livekit_server, "crash-room", "marker")
    eventually(lambda: _jobs(livekit_server, "crash-room", "marker"))

    assert job.state.error
    assert [a.attributes["lk.agent_name"] for a in _agents(livekit_server, "crash-room")] == ["marker"]
    assert len(_jobs(livekit_server, "crash-room", "fragile")) == 1


@pytest.mark.emulator_only(SIMULATED)
def test_capacity_limits_concurrent_jobs(livekit_server):
    livekit_server.control.add_worker("busy", capacity=1)
    _dispatch(livekit_server, "first", "busy")
    eventually(lambda: _jobs(livekit_server, "first", "busy"))

    _dispatch(livekit_server, "second", "busy")
    livekit_server.control.add_worker("marker")
    _dispatch(livekit_server, "second", "marker")
    eventually(lambda: _jobs(livekit_server, "second", "marker"))

    assert _jobs(livekit_server, "second", "busy") == []


def test_two_dispatches_of_one_agent_put_two_agents_in_the_room(livekit_server, add_worker):
    add_worker("triage")
    _dispatch(livekit_server, "doubled", "triage")
    _dispatch(livekit_server, "doubled", "triage")

    agents = eventually(
        lambda: len(_agents(livekit_server, "doubled")) == 2 and _agents(livekit_server, "doubled"),
        timeout=20,
    )

    assert len({a.identity for a in agents}) == 2


def test_delete_dispatch_ends_the_job_and_removes_the_agent(livekit_server, add_worker):
    add_worker("triage")
    dispatch = _dispatch(livekit_server, "done", "triage")
    eventually(lambda: _agents(livekit_server, "done"), timeout=20)

    deleted = call(livekit_server, lambda lk: lk.agent_dispatch.delete_dispatch(dispatch.id, "done"))

    assert deleted.id == dispatch.id and deleted.state.deleted_at == 0  # the server never sets it
    eventually(lambda: _agents(livekit_server, "done") == [], timeout=10, what="the agent removed")
    assert _named(livekit_server, "done", "triage") == []


def test_delete_unknown_dispatch_is_not_found(livekit_server):
    call(livekit_server, lambda lk: lk.room.create_room(api.CreateRoomRequest(name="r")))

    with pytest.raises(api.TwirpError) as error:
        call(livekit_server, lambda lk: lk.agent_dispatch.delete_dispatch("AD_unknown", "r"))

    assert (error.value.code, error.value.message) == (
        "not_found",
        "twirp error unknown: dispatch ID not found",
    )


def test_an_unnamed_worker_is_sent_to_every_new_room_and_a_named_one_is_not(livekit_server, add_worker):
    add_worker("")
    add_worker("named")

    join(livekit_server, join_token(livekit_server, "auto", "caller"))

    [job] = eventually(lambda: _jobs(livekit_server, "auto", ""), timeout=20)
    assert job.agent_name == ""
    eventually(lambda: _agents(livekit_server, "auto"), timeout=20)
    assert [a.identity for a in _agents(livekit_server, "auto")] == [job.state.participant_identity]


@pytest.mark.emulator_only("the control API unregisters simulated workers")
def test_unregistering_a_worker_fails_its_running_jobs(livekit_server):
    livekit_server.control.add_worker("triage")
    _dispatch(livekit_server, "abandoned", "triage")
    eventually(lambda: _agents(livekit_server, "abandoned"))

    removed = livekit_server.control.remove_worker("triage")

    assert len(removed["removed"]) == 1
    [job] = _jobs(livekit_server, "abandoned", "triage")
    assert job.state.status == api.JobStatus.JS_FAILED
    assert _agents(livekit_server, "abandoned") == []


@pytest.mark.emulator_only("the emulator's own record of requests")
def test_state_records_when_each_create_dispatch_arrived(livekit_server):
    before = time.time()
    dispatch = _dispatch(livekit_server, "timed", "triage")

    state = livekit_server.control.state()

    [record] = state["counters"]["create_dispatch_calls"]
    assert record["dispatch_id"] == dispatch.id and before <= record["received_at"] <= time.time()
    assert len(record["request_id"]) == 36  # the client's X-Livekit-Request-Id (a uuid4)
    [entry] = [d for d in state["dispatches"] if d["id"] == dispatch.id]
    assert entry["received_at"] == record["received_at"]


@pytest.mark.emulator_only(SIMULATED)
def test_a_worker_too_slow_to_answer_gets_no_job(livekit_server):
    # LiveKit gives up on a worker that does not answer a job request within 10 s.
    livekit_server.control.add_worker("sleepy", delay_ms=10_000)
    livekit_server.control.add_worker("marker")
    _dispatch(livekit_server, "slow-room", "sleepy")
    _dispatch(livekit_server, "slow-room", "marker")

    eventually(lambda: _jobs(livekit_server, "slow-room", "marker"))

    assert _jobs(livekit_server, "slow-room", "sleepy") == []
    assert any("did not answer" in line for line in livekit_server.control.state()["log"])


@pytest.mark.emulator_only("the control API unregisters simulated workers")
def test_the_unnamed_worker_can_be_unregistered(livekit_server):
    livekit_server.control.add_worker("")

    removed = livekit_server.control.remove_worker("")

    assert [w["agent_name"] for w in removed["removed"]] == [""]
    assert livekit_server.control.state()["workers"] == []
