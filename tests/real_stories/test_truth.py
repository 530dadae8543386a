"""Truth under failure (issue 16) on LiveKit's own server with real livekit-agents workers:
at most one agent of a name per room, cancels that stay cancelled. Each story asserts what
LiveKit lists (the truth a user sees) and what the room API and the ledger say."""

from __future__ import annotations

import time
import urllib.request

import pytest
from livekit import api

from rooms_app.models import Dispatch, WebhookEvent
from rooms_app.reconcile import reconcile_run
from tests.factories import AgentFactory, make_client
from tests.support import eventually

pytestmark = [pytest.mark.django_db(transaction=True)]
S = Dispatch.Status


def cancel(stack, key: str, dispatch_id: int) -> int:
    request = urllib.request.Request(
        f"{stack.portal_url}/api/v1/dispatches/{dispatch_id}",
        headers={"Authorization": f"Bearer {key}"},
        method="DELETE",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status


def watch_agents(stack, room: str, agent_name: str, seconds: float) -> list[int]:
    """How many agents of `agent_name` LiveKit lists, polled for `seconds`."""
    counts = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        counts.append(len(stack.agents(room, agent_name)))
        time.sleep(0.2)
    return counts


def test_a_job_process_slower_than_the_join_deadline_brings_one_agent_not_two(stack, agent_worker):
    # The worker accepts at once, but each job's process spends 6 s in its setup: past the
    # 3 s join deadline, and LiveKit lists no job for ~5 s after the accept.
    AgentFactory(agent_name="cold-agent", join_deadline_s=3, max_attempts=3)
    _, key = make_client("ops", rooms=["cold-*"], agent_names=["cold-agent"])
    agent_worker(agent_name="cold-agent", behavior="coldstart", delay_s=6)

    answer = stack.portal("/api/v1/dispatches", key, {"room_name": "cold-1", "agent_name": "cold-agent"})
    # At the 3 s deadline the portal does not judge: LiveKit may still be assigning the job.
    moved = eventually(
        lambda: Dispatch.objects.filter(
            pk=answer["id"], events__detail__contains="join deadline moved"
        ).first(),
        timeout=10,
        what="the deadline moved",
    )
    assert moved.status in (S.REQUESTED, S.JOB_ASSIGNED)
    assert stack.room_state(key, "cold-1")["ready"] is False

    row = stack.wait_joined("cold-1", "cold-agent", timeout=30)
    assert row.pk == answer["id"] and row.attempt == 1  # no second attempt was made
    counts = watch_agents(stack, "cold-1", "cold-agent", 6)
    assert max(counts) == 1 and counts[-1] == 1
    state = stack.room_state(key, "cold-1")
    assert state["ready"] is True
    assert [(a["agent_name"], a["attempt"]) for a in state["agents"]] == [("cold-agent", 1)]
    assert Dispatch.objects.filter(room__name="cold-1").count() == 1


def test_a_second_agent_of_one_name_is_removed_at_once(stack, agent_worker):
    AgentFactory(agent_name="support-agent", join_deadline_s=8)
    _, key = make_client("ops", rooms=["dup-*"], agent_names=["support-agent"])
    agent_worker(agent_name="support-agent")
    answer = stack.portal("/api/v1/dispatches", key, {"room_name": "dup-1", "agent_name": "support-agent"})
    row = stack.wait_joined("dup-1", "support-agent")
    assert row.pk == answer["id"]

    # Another app (or a hand-written token route) dispatches the same agent name directly.
    stack.lk(
        "agent_dispatch.create_dispatch",
        api.CreateAgentDispatchRequest(room="dup-1", agent_name="support-agent"),
    )
    extra = eventually(
        lambda: [a for a in stack.agents("dup-1", "support-agent") if a.identity != row.participant_identity],
        timeout=20,
        what="the second agent joined",
    )[0]
    # The portal removes it; the agent it recorded stays.
    eventually(
        lambda: [a.identity for a in stack.agents("dup-1", "support-agent")] == [row.participant_identity],
        timeout=15,
        what="only the portal's agent left",
    )
    assert max(watch_agents(stack, "dup-1", "support-agent", 3)) == 1
    [agent] = stack.room_state(key, "dup-1")["agents"]
    assert agent["status"] == S.AGENT_JOINED and agent["participant_identity"] == row.participant_identity
    assert [r["identity"] for r in agent["agents_removed"]] == [extra.identity]
    assert "a second 'support-agent' agent" in agent["agents_removed"][0]["why"]
    assert Dispatch.objects.get(pk=row.pk).status == S.AGENT_JOINED  # no failure, no re-dispatch
    assert Dispatch.objects.filter(room__name="dup-1").count() == 1


def test_a_cancel_stays_cancelled_when_the_join_webhook_arrives_late(stack, agent_worker):
    AgentFactory(agent_name="support-agent", join_deadline_s=8)
    _, key = make_client("ops", rooms=["cancel-*"], agent_names=["support-agent"])
    agent_worker(agent_name="support-agent")
    stack.server.relay.delay_s = 4.0  # every webhook reaches the portal 4 s late

    answer = stack.portal("/api/v1/dispatches", key, {"room_name": "cancel-1", "agent_name": "support-agent"})
    [agent] = eventually(lambda: stack.agents("cancel-1", "support-agent"), timeout=20, what="the agent")
    # LiveKit has the agent in the room; the portal has not heard of its join yet.
    assert Dispatch.objects.get(pk=answer["id"]).status != S.AGENT_JOINED
    assert cancel(stack, key, answer["id"]) == 202
    eventually(lambda: not stack.agents("cancel-1", "support-agent"), timeout=15, what="the agent removed")

    # The late participant_joined, then participant_left of the cancel's own removal.
    eventually(
        lambda: WebhookEvent.objects.filter(
            event="participant_left", participant_identity=agent.identity
        ).exists(),
        timeout=20,
        what="the late webhooks handled",
    )
    assert max(watch_agents(stack, "cancel-1", "support-agent", 4)) == 0
    reconcile_run(room_names=["cancel-1"])
    assert [(d.pk, d.status) for d in Dispatch.objects.filter(room__name="cancel-1")] == [
        (answer["id"], S.CANCELLED)
    ]
    assert stack.agents("cancel-1", "support-agent") == []
    state = stack.room_state(key, "cancel-1")
    assert state["agents"] == [] and state["ready"] is False


def test_a_cancel_during_a_cold_start_leaves_no_agent_behind(stack, agent_worker):
    # livekit-agents drops the termination of a job still waiting for its process: the
    # cancelled dispatch's agent joins seconds after the cancel. The portal removes it.
    AgentFactory(agent_name="cold-agent", join_deadline_s=8)
    _, key = make_client("ops", rooms=["cold-*"], agent_names=["cold-agent"])
    agent_worker(agent_name="cold-agent", behavior="coldstart", delay_s=5)
    mark = stack.server.log_mark()

    answer = stack.portal("/api/v1/dispatches", key, {"room_name": "cold-2", "agent_name": "cold-agent"})
    assert answer["status"] == S.REQUESTED  # sent to LiveKit from the request itself
    # The worker has accepted the job (the server assigned it); its process is still in its
    # 5 s setup, and the worker's own /worker does not count it yet.
    eventually(
        lambda: "assigned job to worker" in stack.server.log_since(mark), timeout=10, what="the job assigned"
    )
    assert not stack.agents("cold-2", "cold-agent")
    assert cancel(stack, key, answer["id"]) == 202

    [late] = eventually(lambda: stack.agents("cold-2", "cold-agent"), timeout=20, what="the late agent")
    eventually(lambda: not stack.agents("cold-2", "cold-agent"), timeout=15, what="the late agent removed")
    assert max(watch_agents(stack, "cold-2", "cold-agent", 3)) == 0
    row = Dispatch.objects.get(pk=answer["id"])
    assert row.status == S.CANCELLED
    assert [r["identity"] for r in row.agents_removed] == [late.identity]
    assert Dispatch.objects.filter(room__name="cold-2").count() == 1
