"""The real server with a real livekit-agents worker: a dispatch becomes a job, and the agent
really joins the room (WebRTC over loopback)."""

from __future__ import annotations

import asyncio

import pytest
from livekit import api

from rooms_app.livekit_client import KIND_AGENT, livekit_call
from tests.support import eventually


@pytest.fixture
def portal_on_real(real_livekit, settings):
    """The portal's LiveKit settings pointing at the real server."""
    settings.LIVEKIT_URL = real_livekit.url
    settings.LIVEKIT_API_KEY = real_livekit.api_key
    settings.LIVEKIT_API_SECRET = real_livekit.api_secret
    settings.LIVEKIT_TIMEOUT_S = 5.0
    return real_livekit


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


def test_the_worker_reports_its_name_and_no_load(real_livekit, agent_worker):
    worker = agent_worker(agent_name="idle-agent")

    status = worker.status()

    assert worker.worker_id.startswith("AW_")
    assert (status["agent_name"], status.get("active_jobs", 0), status.get("worker_load", 0)) == (
        "idle-agent",
        0,
        0,
    )
