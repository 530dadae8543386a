"""When a worker under an agent's name was last seen, and the warnings for agents never seen:
on the agent list, the agent page and the rules that name them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from rooms_app.models import Dispatch, Room, WebhookEvent
from rooms_app.selectors import agents_last_seen
from tests.factories import AgentFactory, RuleFactory

pytestmark = pytest.mark.django_db


def _joined(agent_name: str, room_name: str, identity: str, *, ago_s: float) -> Dispatch:
    room = Room.objects.create(name=room_name, status="finished")
    row = Dispatch.objects.create(
        room=room, agent_name=agent_name, source="rule", status="agent_joined", participant_identity=identity
    )
    at = timezone.now() - timedelta(seconds=ago_s)
    Dispatch.objects.filter(pk=row.pk).update(job_assigned_at=at, joined_at=at)
    return row


def test_the_latest_join_or_job_wins_with_its_identity_and_room():
    _joined("support-agent", "support-1", "agent-AJ_old", ago_s=3600)
    _joined("support-agent", "support-2", "agent-AJ_new", ago_s=60)

    seen = agents_last_seen(agent_names=["support-agent", "sales-agent"])

    assert set(seen) == {"support-agent"}  # sales-agent: never seen
    assert (seen["support-agent"].room_name, seen["support-agent"].participant_identity) == (
        "support-2",
        "agent-AJ_new",
    )


def test_a_webhook_of_an_agent_joining_counts_and_people_never_count_as_the_unnamed_agent():
    _joined("support-agent", "support-1", "agent-AJ_1", ago_s=600)
    WebhookEvent.objects.create(
        event_id="EV_1",
        event="participant_joined",
        room_name="support-9",
        participant_identity="agent-AJ_9",
        agent_name="support-agent",
    )
    WebhookEvent.objects.create(
        event_id="EV_2", event="participant_joined", room_name="support-9", participant_identity="ann"
    )

    seen = agents_last_seen(agent_names=["support-agent", ""])

    assert (seen["support-agent"].room_name, seen["support-agent"].how) == ("support-9", "joined")
    assert "" not in seen  # ann is a person, not the unnamed agent


def test_the_agent_list_says_when_each_agent_was_seen_and_warns_about_the_others(admin_client):
    AgentFactory(agent_name="support-agent")
    AgentFactory(agent_name="sales-agent")
    _joined("support-agent", "support-1", "agent-AJ_1", ago_s=600)

    response = admin_client.get("/admin/agents_app/agent/")
    page = response.content.decode()

    assert "10 min ago</span>, joined in support-1 as agent-AJ_1" in page
    assert page.count("never seen") == 1 and "WorkerOptions(agent_name=&#x27;sales-agent&#x27;)" in page
    warnings = [str(m) for m in get_messages(response.wsgi_request)]
    assert any(m.startswith("Never seen: 'sales-agent'.") for m in warnings)


def test_a_rule_whose_agent_was_never_seen_says_so(admin_client):
    RuleFactory(name="sales rooms", agent=AgentFactory(agent_name="sales-agent"), room_match_value="sales-*")

    page = admin_client.get("/admin/agents_app/dispatchrule/").content.decode()

    assert "agent &#x27;sales-agent&#x27; was never seen" in page


def test_the_agent_page_shows_when_it_was_last_seen(admin_client):
    agent = AgentFactory(agent_name="support-agent")
    _joined("support-agent", "support-1", "agent-AJ_1", ago_s=600)

    page = admin_client.get(f"/admin/agents_app/agent/{agent.pk}/change/").content.decode()

    assert "10 min ago</span>, joined in support-1 as agent-AJ_1" in page


def test_one_read_for_a_page_of_agents_however_many(django_assert_max_num_queries):
    for i in range(10):
        _joined(f"agent-{i}", f"room-{i}", f"agent-AJ_{i}", ago_s=60)

    with django_assert_max_num_queries(5):
        seen = agents_last_seen(agent_names=[f"agent-{i}" for i in range(10)])

    assert len(seen) == 10


def test_an_agent_created_under_a_name_never_seen_is_asked_did_you_mean_the_near_name_seen(admin_client):
    """The workers register as 'demo-agent'; the admin types 'demo-agnet'."""
    from rooms_app.models import AgentSeen

    AgentSeen.objects.create(
        agent_name="demo-agent", room_name="demo-1", how="agent joined (webhook)", last_seen_at=timezone.now()
    )
    AgentSeen.objects.create(
        agent_name="billing-bot",
        room_name="bill-1",
        how="agent joined (webhook)",
        last_seen_at=timezone.now(),
    )

    response = admin_client.post(
        "/admin/agents_app/agent/add/",
        {
            "agent_name": "demo-agnet",
            "display_name": "Demo",
            "enabled": "on",
            "join_deadline_s": 15,
            "max_attempts": 1,
        },
        follow=True,
    )

    assert response.status_code == 200
    # What the admin reads on the page the save leads to.
    page = response.content.decode()
    assert "did you mean &#x27;demo-agent&#x27;?" in page or "did you mean 'demo-agent'?" in page, page
    assert "billing-bot" not in page
    listing = [str(m) for m in get_messages(admin_client.get("/admin/agents_app/agent/").wsgi_request)]
    assert any(m.startswith("Never seen: 'demo-agnet' (did you mean 'demo-agent'?).") for m in listing), (
        listing
    )


def test_a_name_seen_is_not_asked_did_you_mean(admin_client):
    from rooms_app.models import AgentSeen

    AgentSeen.objects.create(
        agent_name="demo-agent", room_name="demo-1", how="joined", last_seen_at=timezone.now()
    )
    _joined("demo-agent", "demo-1", "agent-AJ_1", ago_s=60)

    response = admin_client.post(
        "/admin/agents_app/agent/add/",
        {"agent_name": "demo-agent", "display_name": "Demo", "join_deadline_s": 15, "max_attempts": 1},
        follow=True,
    )

    assert not any("did you mean" in str(m) for m in get_messages(response.wsgi_request))
