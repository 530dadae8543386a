"""The real server with a real livekit-agents worker (tests/agent_worker.py): what each of its
behaviours does, as the portal's LiveKit client sees it."""

from __future__ import annotations

import asyncio

import pytest
from livekit import api

from livekit_boundary.client import KIND_AGENT, livekit_call
from tests.support import eventually

ACTIVE = api.ParticipantInfo.State.ACTIVE


def _state(server, room: str, identity: str) -> int:
    async def get() -> int:
        async with api.LiveKitAPI(server.url, server.api_key, server.api_secret) as lk:
            info = await lk.room.get_participant(api.RoomParticipantIdentity(room=room, identity=identity))
            return info.state

    return asyncio.run(get())


def _jobs(room: str, agent_name: str):
    return [
        job for d in livekit_call("list_dispatches", room) if d.agent_name == agent_name for job in d.jobs
    ]


def _agents(room: str):
    return [p for p in livekit_call("list_participants", room) if p.kind == KIND_AGENT]


def test_a_dispatch_runs_on_a_real_worker_and_its_agent_joins_the_room(portal_on_real, agent_worker):
    worker = agent_worker(agent_name="real-triage")
    idle = worker.status()  # the worker's own view, from its health server
    assert worker.worker_id.startswith("AW_")
    assert (idle["agent_name"], idle.get("active_jobs", 0), idle.get("worker_load", 0)) == (
        "real-triage",
        0,
        0,
    )

    dispatch = livekit_call("create_dispatch", "real-room-1", "real-triage", '{"case": 1}')

    assert dispatch.id.startswith("AD_") and dispatch.jobs == ()
    [job] = eventually(lambda: _jobs("real-room-1", "real-triage"), timeout=20, what="a job")
    assert job.id.startswith("AJ_")
    [agent] = eventually(lambda: _agents("real-room-1"), timeout=20, what="the agent participant")
    assert agent.identity == job.participant_identity
    assert agent.agent_name == "real-triage"
    # ACTIVE only once its WebRTC transport is connected: the agent is really in the room.
    eventually(lambda: _state(portal_on_real, "real-room-1", agent.identity) == ACTIVE, timeout=20)
    [job] = eventually(
        lambda: [j for j in _jobs("real-room-1", "real-triage") if j.status == "running"], timeout=10
    )
    assert worker.status()["active_jobs"] == 1


def _worker_logged(worker, text: str) -> bool:
    return text in worker.log()


@pytest.mark.parametrize(
    ("behavior", "logged"), [("raise", "job crashed"), ("exit", "process exited with non-zero exit code 1")]
)
def test_an_entrypoint_that_fails_never_joins_and_its_job_still_shows_running(
    portal_on_real, agent_worker, behavior, logged
):
    worker = agent_worker(agent_name=f"agent-that-{behavior}s", behavior=behavior)

    livekit_call("create_dispatch", f"{behavior}-room", f"agent-that-{behavior}s", "")

    eventually(lambda: _worker_logged(worker, logged), timeout=20, what="the job process failed")
    [job] = eventually(lambda: _jobs(f"{behavior}-room", f"agent-that-{behavior}s"), timeout=20, what="a job")
    # The server is never told: the job stays "running" and no agent ever joins.
    assert (job.status, job.error) == ("running", "")
    assert _agents(f"{behavior}-room") == []
    assert worker.process.poll() is None  # only the job process failed; the worker is still registered


def test_a_slow_worker_joins_after_its_delay(portal_on_real, agent_worker):
    worker = agent_worker(agent_name="slowpoke", behavior="slow", delay_s=1.0)

    livekit_call("create_dispatch", "slow-room", "slowpoke", "")

    [agent] = eventually(lambda: _agents("slow-room"), timeout=20, what="the agent participant")
    assert agent.agent_name == "slowpoke"
    assert _worker_logged(worker, "received job request")


def _tracks(server, room: str, identity: str) -> list:
    async def get() -> list:
        async with api.LiveKitAPI(server.url, server.api_key, server.api_secret) as lk:
            info = await lk.room.get_participant(api.RoomParticipantIdentity(room=room, identity=identity))
            return list(info.tracks)

    return asyncio.run(get())


def test_a_publishing_agent_joins_with_a_live_audio_track(portal_on_real, agent_worker):
    # What latency measurements use: LiveKit announces a publisher to the room at once, a
    # participant that publishes nothing only on its ~3 s batch tick.
    agent_worker(agent_name="speaker", behavior="publish")

    livekit_call("create_dispatch", "publish-room", "speaker", "")

    [agent] = eventually(lambda: _agents("publish-room"), timeout=20, what="the agent participant")
    [track] = eventually(
        lambda: _tracks(portal_on_real, "publish-room", agent.identity), timeout=20, what="its track"
    )
    assert (track.type, track.source, track.muted) == (api.TrackType.AUDIO, api.TrackSource.MICROPHONE, False)
