"""The users' stories (issue 8), end to end on LiveKit's own server: real livekit-agents
workers, real participants joining over WebRTC with portal tokens, the real server's webhooks,
the portal's live server and a real Celery worker. What a user would notice is asserted: which
agents are in the room (as LiveKit lists them), and what the ledger and the doctor say."""

from __future__ import annotations

import pytest

from rooms_app.models import Dispatch, Room
from tests.factories import AgentFactory, RuleFactory, make_client
from tests.support import eventually

pytestmark = [pytest.mark.django_db(transaction=True)]
S = Dispatch.Status


def token_rule(agent_name: str = "support-agent", rooms: str = "support-*", **agent_fields):
    agent = AgentFactory(agent_name=agent_name, **agent_fields)
    return RuleFactory(name=f"{agent_name} by token", agent=agent, room_match_value=rooms, delivery="token")


def test_an_unnamed_worker_is_sent_to_every_new_room_without_being_asked(stack, agent_worker):
    worker = agent_worker(agent_name="")

    stack.create_room("lobby-1")
    stack.create_room("lobby-2")

    for room in ("lobby-1", "lobby-2"):
        [agent] = eventually(lambda room=room: stack.agents(room), timeout=20, what=f"an agent in {room}")
        assert agent.attributes.get("lk.agent_name", "") == ""
    eventually(lambda: worker.status().get("active_jobs", 0) == 2, what="two jobs on the unnamed worker")
    # Not the portal's agent: nothing is put in the ledger for it.
    assert not Dispatch.objects.exists()


def test_a_named_worker_gets_nothing_automatically_but_a_token_rule_brings_it(stack, agent_worker):
    token_rule()
    _, key = make_client("web", rooms=["support-*"])
    unnamed = agent_worker(agent_name="")
    named = agent_worker(agent_name="support-agent")

    stack.create_room("plain-1")
    # The unnamed worker's agent arriving proves LiveKit has handed out this room's jobs.
    eventually(lambda: stack.agents("plain-1"), timeout=20, what="the unnamed agent")
    assert stack.agents("plain-1", "support-agent") == []
    assert named.status().get("active_jobs", 0) == 0 and unnamed.status().get("active_jobs", 0) == 1

    minted = stack.token(key, "support-1", "alice")
    assert [(a["agent_name"], a["delivery"]) for a in minted["dispatch"]["agents"]] == [
        ("support-agent", "token")
    ]
    alice = stack.join(minted)  # this join creates the room: LiveKit honours the token's agents

    row = stack.wait_joined("support-1", "support-agent")
    assert (row.source, row.delivery) == ("token", "token")
    [agent] = stack.agents("support-1", "support-agent")
    assert row.participant_identity == agent.identity
    eventually(lambda: agent.identity in alice.agents(), what="alice sees the agent")
    [dispatch] = stack.dispatches("support-1", "support-agent")  # LiveKit's, from the token
    assert Room.objects.get(name="support-1").existed_before_token is False
    assert named.status().get("active_jobs", 0) == 1
