"""LiveKit's dispatch `deployment` on the real server (v1.13.5) with real livekit-agents workers.

What the open-source server does (pkg/agent/client.go `GetAgentTopic`, pkg/service/agentservice.go
`workerKey`): a job goes only to workers registered with exactly the dispatch's agent name AND
deployment; a worker's deployment comes from LIVEKIT_AGENT_DEPLOYMENT (livekit-agents 1.8.9 has no
option for it). These tests pin that, through the portal's own path (rule or Dispatch API ->
ledger row -> CreateDispatch)."""

from __future__ import annotations

import asyncio

import pytest

from agents_app.models import DispatchRule
from livekit_boundary.client import KIND_AGENT, livekit_call
from rooms_app import services
from rooms_app.models import Dispatch
from tests.factories import AgentFactory
from tests.support import eventually

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_deployments(portal_on_real, agent_worker, monkeypatch):
    """One agent name, a staging worker and a production worker."""
    workers = {}
    for deployment in ("staging", "production"):
        monkeypatch.setenv("LIVEKIT_AGENT_DEPLOYMENT", deployment)
        workers[deployment] = agent_worker(agent_name="dep-agent")
    monkeypatch.delenv("LIVEKIT_AGENT_DEPLOYMENT")
    return workers


def _send(room: str, **fields) -> Dispatch:
    """The Dispatch API's path: a ledger row, then the task's CreateDispatch (run here)."""
    dispatch, _ = services.dispatch_api_create(
        client=None, requested_by="test", room_name=room, agent_name="dep-agent", metadata=None, **fields
    )
    services.dispatch_request(dispatch_id=dispatch.pk)
    return dispatch


def _create_room(_worker, name: str) -> None:
    from django.conf import settings
    from livekit import api

    async def create() -> None:
        async with api.LiveKitAPI(
            settings.LIVEKIT_URL, settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET
        ) as lk:
            await lk.room.create_room(api.CreateRoomRequest(name=name))

    asyncio.run(create())


def _ours(room: str):
    """The room's dispatches of our agent (LiveKit adds an implicit '' one to new rooms)."""
    return [d for d in livekit_call("list_dispatches", room) if d.agent_name == "dep-agent"]


def _agent_in(room: str):
    return [p for p in livekit_call("list_participants", room) if p.kind == KIND_AGENT]


def test_each_room_gets_the_worker_of_its_deployment(two_deployments):
    AgentFactory(agent_name="dep-agent")
    staging, production = two_deployments["staging"], two_deployments["production"]

    _send("dep-room-staging", deployment="staging", attributes={"tier": "gold"})
    eventually(lambda: _agent_in("dep-room-staging"), timeout=20, what="the staging agent")
    _send("dep-room-production", deployment="production")
    eventually(lambda: _agent_in("dep-room-production"), timeout=20, what="the production agent")

    eventually(lambda: staging.status().get("active_jobs") == 1, timeout=10, what="staging busy")
    eventually(lambda: production.status().get("active_jobs") == 1, timeout=10, what="production busy")
    assert "dep-room-staging" in staging.log() and "dep-room-production" not in staging.log()
    assert "dep-room-production" in production.log() and "dep-room-staging" not in production.log()
    [lk_dispatch] = _ours("dep-room-staging")
    assert (lk_dispatch.deployment, lk_dispatch.attributes) == ("staging", {"tier": "gold"})


def test_a_dispatch_without_deployment_reaches_no_deployed_worker(two_deployments):
    """Exact match: an empty deployment is its own deployment on the open-source server."""
    AgentFactory(agent_name="dep-agent")
    _send("dep-room-none")
    lk_dispatch = eventually(lambda: _ours("dep-room-none"), timeout=10)
    assert lk_dispatch[0].deployment == "" and lk_dispatch[0].jobs == ()
    # Nothing arrives: both workers stay idle (polled a while, not slept).
    with pytest.raises(AssertionError):
        eventually(lambda: _agent_in("dep-room-none"), timeout=4, what="an agent")
    assert two_deployments["staging"].status().get("active_jobs", 0) == 0
    assert two_deployments["production"].status().get("active_jobs", 0) == 0


def test_an_explicit_rule_carries_its_deployment(two_deployments):
    agent = AgentFactory(agent_name="dep-agent")
    DispatchRule.objects.create(
        name="staging rooms", agent=agent, room_match_value="stg-*", delivery="explicit", deployment="staging"
    )
    _create_room(two_deployments["staging"], "stg-1")  # made by another app (as SIP would)
    from rooms_app.services import room_get_or_create, room_rules_apply

    [dispatch] = room_rules_apply(room=room_get_or_create(name="stg-1"))
    assert dispatch.deployment == "staging"
    services.dispatch_request(dispatch_id=dispatch.pk)
    eventually(lambda: _agent_in("stg-1"), timeout=20, what="the staging agent")
    eventually(lambda: two_deployments["staging"].status().get("active_jobs") == 1, timeout=10)
