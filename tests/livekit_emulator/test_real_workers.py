"""Real livekit-agents 1.8.9 workers on the emulator's worker socket (`/agent`): registration,
job requests and assignments, job status, termination, worker status, and the job hand-over
faults, seen from the API client, the emulator's state and the worker's own log.

Emulator only: the same stories on livekit-server are in test_dispatch.py and tests/real_stories.
A worker takes 3 to 20 s to register on a busy machine, so one holding worker
(holding_worker.py: its jobs stay running without joining their room) serves the module. Each
test's reset closes its socket; livekit-agents reconnects at once and registers anew.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from livekit import api, rtc

import tests.real_livekit as real_livekit
from tests.real_livekit import AgentWorker, start_worker

from .support import Callers, call, eventually, participants, start_receiver

HOLDING = "real-holder"
HOLDING_PROGRAM = Path(__file__).with_name("holding_worker.py")


def _start(server, tmp_path: Path, *, agent_name: str, program: Path | None = None) -> AgentWorker:
    """tests/agent_worker.py (or `program`) against the emulator, registered."""
    target = SimpleNamespace(
        url=server.url, ws_url=server.ws_url, api_key=server.api_key, api_secret=server.api_secret, workers=[]
    )
    log_path = tmp_path / f"worker-{agent_name or 'unnamed'}-{time.monotonic_ns()}.log"
    with pytest.MonkeyPatch.context() as patch:
        if program is not None:
            patch.setattr(real_livekit, "WORKER_PROGRAM", program)
        return start_worker(target, agent_name=agent_name, behavior="accept", log_path=log_path)


@pytest.fixture(scope="module")
def holding_worker(livekit_emulator_session, tmp_path_factory) -> Iterator[AgentWorker]:
    worker = _start(
        livekit_emulator_session,
        tmp_path_factory.mktemp("workers"),
        agent_name=HOLDING,
        program=HOLDING_PROGRAM,
    )
    yield worker
    worker.kill()


@pytest.fixture
def holder(holding_worker, livekit_emulator_reset) -> dict:
    """The holding worker as the emulator's state shows it, registered again after the reset."""
    return eventually(lambda: _remote_worker(livekit_emulator_reset, HOLDING), timeout=30)


def _remote_worker(server, agent_name: str) -> dict | None:
    workers = [w for w in server.control.state()["workers"] if w["remote"] and w["agent_name"] == agent_name]
    return workers[0] if workers else None


def _dispatch(server, room: str, agent_name: str, deployment: str = "") -> api.AgentDispatch:
    request = api.CreateAgentDispatchRequest(room=room, agent_name=agent_name, deployment=deployment)
    return call(server, lambda lk: lk.agent_dispatch.create_dispatch(request))


def _jobs(server, room: str) -> list:
    dispatches = call(server, lambda lk: lk.agent_dispatch.list_dispatch(room))
    return [job for d in dispatches for job in d.state.jobs]


def _log(server) -> str:
    return "\n".join(server.control.state()["log"])


def test_a_real_worker_registers_and_reports_its_status_every_few_seconds(livekit_emulator_reset, holder):
    assert holder["id"].startswith("AW_") and holder["version"] == "1.8.9"
    assert (holder["available"], holder["load"], holder["deployment"]) == (True, 0.0, "")

    first = eventually(lambda: _remote_worker(livekit_emulator_reset, HOLDING)["status_at"], timeout=10)
    second = eventually(
        lambda: (_remote_worker(livekit_emulator_reset, HOLDING)["status_at"] or 0) > first, timeout=10
    )

    assert second
    later = _remote_worker(livekit_emulator_reset, HOLDING)["status_at"]
    assert 1.5 < later - first < 6  # livekit-agents sends UpdateWorkerStatus every 2.5 s


def test_create_dispatch_reaches_the_real_worker_which_runs_the_job(
    livekit_emulator_reset, holder, holding_worker
):
    dispatch = _dispatch(livekit_emulator_reset, "real-call", HOLDING)

    [job] = eventually(lambda: _jobs(livekit_emulator_reset, "real-call"), timeout=15)

    assert job.dispatch_id == dispatch.id and job.id.startswith("AJ_")
    assert job.state.worker_id == holder["id"]
    assert job.state.status == api.JobStatus.JS_RUNNING
    assert job.state.participant_identity == f"agent-{job.id}"  # what the worker asked for
    eventually(lambda: f"HOLDING_JOB {job.id}" in holding_worker.log(), timeout=15)


def test_delete_dispatch_terminates_the_real_job(livekit_emulator_reset, holder, holding_worker):
    dispatch = _dispatch(livekit_emulator_reset, "real-end", HOLDING)
    [job] = eventually(lambda: _jobs(livekit_emulator_reset, "real-end"), timeout=15)
    eventually(lambda: f"HOLDING_JOB {job.id}" in holding_worker.log(), timeout=15)

    call(livekit_emulator_reset, lambda lk: lk.agent_dispatch.delete_dispatch(dispatch.id, "real-end"))

    # The worker closes the job; livekit-agents gives a running entrypoint 15 s before cancelling it.
    eventually(lambda: f"JOB_ENDED {job.id}" in holding_worker.log(), timeout=30)


def test_a_dispatch_naming_another_agent_or_deployment_reaches_no_real_worker(livekit_emulator_reset, holder):
    _dispatch(livekit_emulator_reset, "typo", HOLDING + "-x")
    _dispatch(livekit_emulator_reset, "staging", HOLDING, deployment="staging")
    _dispatch(livekit_emulator_reset, "exact", HOLDING)

    eventually(lambda: _jobs(livekit_emulator_reset, "exact"), timeout=15)

    assert _jobs(livekit_emulator_reset, "typo") == [] and _jobs(livekit_emulator_reset, "staging") == []
    assert _log(livekit_emulator_reset).count("not dispatching agent job since no worker is available") == 2


def test_refused_availability_leaves_the_dispatch_without_a_job(livekit_emulator_reset, holder):
    livekit_emulator_reset.control.worker_faults(refuse_availability=True)
    _dispatch(livekit_emulator_reset, "refused", HOLDING)
    livekit_emulator_reset.control.worker_faults()
    _dispatch(livekit_emulator_reset, "accepted", HOLDING)

    eventually(lambda: _jobs(livekit_emulator_reset, "accepted"), timeout=15)

    assert _jobs(livekit_emulator_reset, "refused") == []
    assert f"worker {holder['id']} refused the job request" in _log(livekit_emulator_reset)


def test_a_dropped_assignment_is_running_on_the_server_but_unknown_to_the_worker(
    livekit_emulator_reset, holder, holding_worker
):
    livekit_emulator_reset.control.worker_faults(drop_assignment=True)
    _dispatch(livekit_emulator_reset, "lost", HOLDING)

    [job] = eventually(lambda: _jobs(livekit_emulator_reset, "lost"), timeout=15)

    assert job.state.status == api.JobStatus.JS_RUNNING  # as far as the server knows
    # The worker accepted, waited 7.5 s for the assignment and gave up.
    eventually(lambda: f"assignment for job {job.id} timed out" in holding_worker.log(), timeout=20)
    assert f"HOLDING_JOB {job.id}" not in holding_worker.log()


def test_an_assignment_later_than_the_worker_waits_is_ignored_by_it(
    livekit_emulator_reset, holder, holding_worker
):
    livekit_emulator_reset.control.worker_faults(assignment_delay_ms=8_000)
    _dispatch(livekit_emulator_reset, "late", HOLDING)

    [job] = eventually(lambda: _jobs(livekit_emulator_reset, "late"), timeout=15)

    eventually(lambda: "received assignment for an unknown job" in holding_worker.log(), timeout=20)
    assert f"HOLDING_JOB {job.id}" not in holding_worker.log()


def test_killing_the_worker_socket_fails_its_job_and_the_worker_registers_again(
    livekit_emulator_reset, holder, holding_worker
):
    _dispatch(livekit_emulator_reset, "cut", HOLDING)
    [job] = eventually(lambda: _jobs(livekit_emulator_reset, "cut"), timeout=15)

    livekit_emulator_reset.control.disconnect_worker(holder["id"])

    [failed] = eventually(
        lambda: [
            j for j in _jobs(livekit_emulator_reset, "cut") if j.state.status == api.JobStatus.JS_FAILED
        ],
        timeout=15,
    )
    assert failed.id == job.id and failed.state.error == "agent worker disconnected"
    again = eventually(lambda: _remote_worker(livekit_emulator_reset, HOLDING), timeout=30)
    assert again["id"] != holder["id"]


def test_an_unnamed_real_worker_gets_every_new_room_and_its_agent_joins_a_real_caller(
    livekit_emulator_reset, tmp_path
):
    receiver, httpd = start_receiver()
    livekit_emulator_reset.control.webhooks(url=receiver.url, retry_backoff_ms=20)
    worker = _start(livekit_emulator_reset, tmp_path, agent_name="")
    callers = Callers(livekit_emulator_reset)
    try:
        callers.join("walk-in", "caller")  # LiveKit's rtc SDK, over WebRTC

        [job] = eventually(lambda: _jobs(livekit_emulator_reset, "walk-in"), timeout=15)
        assert job.agent_name == "" and job.state.worker_id == worker.worker_id
        # The job's process joins with the rtc SDK too (ctx.connect()), and the caller sees it.
        agent = eventually(lambda: callers.remote("caller").get(f"agent-{job.id}"), timeout=20)
        assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        assert ("joined", agent.identity) in callers.events["caller"]
        eventually(lambda: f"job {job.id} joined room walk-in as agent-{job.id}" in worker.log(), timeout=10)
        listed = participants(livekit_emulator_reset, "walk-in")
        assert sorted(p.identity for p in listed) == sorted(["caller", agent.identity])
        eventually(lambda: "participant_joined" in receiver.events("walk-in")[2:], timeout=10)
        assert receiver.events("walk-in")[:3] == ["room_started", "participant_joined", "participant_joined"]

        callers.leave("caller")
        call(livekit_emulator_reset, lambda lk: lk.room.delete_room(api.DeleteRoomRequest(room="walk-in")))

        # The room's end reaches the job: its agent is told to leave, and leaves.
        eventually(lambda: receiver.events("walk-in")[-1:] == ["room_finished"], timeout=10)
        left = [
            r.json["participant"]["identity"]
            for r in receiver.received
            if r.json["event"] == "participant_left"
        ]
        assert sorted(left) == sorted(["caller", agent.identity])
    finally:
        callers.close()
        worker.kill()
        httpd.shutdown()
        httpd.server_close()
