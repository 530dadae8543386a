"""Worker presence from real livekit-agents workers' own health servers (`/` and `/worker`)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from livekit_boundary.client import KIND_AGENT, livekit_call
from tests.factories import AgentFactory
from tests.receiver import Reply
from tests.support import eventually
from watch_app import presence
from watch_app.models import WorkerEndpoint
from watch_app.selectors import agent_presence

pytestmark = pytest.mark.django_db


def test_a_real_worker_online_busy_then_gone(portal_on_real, agent_worker):
    agent = AgentFactory(agent_name="presence-agent")
    worker = agent_worker(agent_name="presence-agent")
    endpoint = WorkerEndpoint.objects.create(agent=agent, url=worker.health_url, allow_private=True)

    assert presence.workers_poll() == 1
    endpoint.refresh_from_db()
    assert (endpoint.healthy, endpoint.load, endpoint.active_jobs) == (True, 0.0, 0)
    assert endpoint.reported_agent_name == "presence-agent"
    now = agent_presence(agent_name="presence-agent")
    assert (
        now.state == "online"
        and now.message == "1 worker(s) online for 'presence-agent' (load 0.00, 0 active job(s))"
    )

    livekit_call("create_dispatch", "presence-room", "presence-agent", "")
    eventually(
        lambda: [p for p in livekit_call("list_participants", "presence-room") if p.kind == KIND_AGENT],
        timeout=20,
        what="the agent joined",
    )

    def busy() -> bool:
        presence.workers_poll()
        return WorkerEndpoint.objects.get().active_jobs == 1

    eventually(busy, timeout=10, what="the worker reports its job")
    assert "1 active job(s)" in agent_presence(agent_name="presence-agent").message

    worker.kill()
    assert presence.workers_poll() == 0
    endpoint.refresh_from_db()
    assert endpoint.healthy is False and endpoint.last_error.startswith("cannot reach http://127.0.0.1:")
    later = timezone.now() + timedelta(minutes=1)
    gone = agent_presence(agent_name="presence-agent", now=later)
    assert gone.state == "stale" and gone.message.startswith("workers for 'presence-agent' answered 6")


def test_no_worker_online(db, settings):
    agent = AgentFactory(agent_name="nobody")
    from tests.real_livekit import free_port

    WorkerEndpoint.objects.create(agent=agent, url=f"http://127.0.0.1:{free_port()}", allow_private=True)
    settings.WORKER_POLL_TIMEOUT_S = 1
    presence.workers_poll()
    found = agent_presence(agent_name="nobody")
    assert found.state == "offline" and found.message.startswith(
        "no worker online for 'nobody' (cannot reach"
    )


def test_full_workers(db, receiver):
    """A worker reporting a load at its threshold: it would reject jobs."""
    receiver.routes["/"] = Reply(200, b"OK")
    receiver.routes["/worker"] = Reply(200, b'{"agent_name": "busy", "active_jobs": 12, "worker_load": 0.97}')
    WorkerEndpoint.objects.create(agent=AgentFactory(agent_name="busy"), url=receiver.url, allow_private=True)
    presence.workers_poll()
    found = agent_presence(agent_name="busy")
    assert (found.state, found.message) == ("full", "workers for 'busy' are full (load 0.97)")


def test_redirects_are_not_followed_and_503_is_unhealthy(db, receiver):
    receiver.routes["/"] = Reply(302, headers={"Location": "http://169.254.169.254/latest/meta-data"})
    endpoint = WorkerEndpoint.objects.create(
        agent=AgentFactory(agent_name="r"), url=receiver.url, allow_private=True
    )
    presence.workers_poll()
    endpoint.refresh_from_db()
    assert endpoint.healthy is False and "redirect not followed 302" in endpoint.last_error
    assert [r.path for r in receiver.requests] == ["/"]
    receiver.routes["/"] = Reply(503, b"failed to connect to livekit")
    presence.workers_poll()
    endpoint.refresh_from_db()
    assert endpoint.healthy is False and endpoint.last_error.endswith("answered 503")


def test_a_public_address_is_refused_unless_https_and_private_needs_permission(db, receiver, settings):
    endpoint = WorkerEndpoint.objects.create(
        agent=AgentFactory(agent_name="p"), url=receiver.url, allow_private=False
    )
    presence.workers_poll()
    endpoint.refresh_from_db()
    assert endpoint.healthy is False and "is a loopback address: refused unless" in endpoint.last_error
    assert receiver.requests == []


def test_seen_from_the_ledger_without_a_health_url(db):
    from rooms_app.models import Dispatch, Room, WebhookEvent

    room = Room.objects.create(name="r1")
    Dispatch.objects.create(
        room=room, agent_name="ghost", source="api", status="agent_joined", joined_at=timezone.now()
    )
    found = agent_presence(agent_name="ghost")
    assert found.state == "seen" and "took a job or joined a room" in found.message
    assert agent_presence(agent_name="never").state == "unknown"
    WebhookEvent.objects.create(
        event_id="EV_1", event="participant_joined", room_name="r2", agent_name="never"
    )
    assert agent_presence(agent_name="never").state == "seen"
