"""The token path's two hooks: `room_is_live` (a cache lookup, no query) and `token_minted`
(enqueues the ledger work, writes nothing), and what the recording task then writes."""

from __future__ import annotations

import pytest
from django.utils import timezone

from rooms_app import selectors, services
from rooms_app.models import Dispatch, Room
from tests.factories import AgentFactory, RuleFactory, make_client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _keys(settings):
    settings.LIVEKIT_API_KEY = "token-path-key"
    settings.LIVEKIT_API_SECRET = "token-path-secret-long-enough-for-hs256-0123456789"


def test_room_is_live_follows_the_ledger_without_queries(
    django_assert_num_queries, django_capture_on_commit_callbacks
):
    with django_assert_num_queries(0):
        assert selectors.room_is_live(room_name="support-1") is False
    with django_capture_on_commit_callbacks(execute=True):
        services.room_started(name="support-1", sid="RM_1", started_at=timezone.now())
    with django_assert_num_queries(0):
        assert selectors.room_is_live(room_name="support-1") is True
    with django_capture_on_commit_callbacks(execute=True):
        services.room_finished(name="support-1", sid="RM_1")
    assert selectors.room_is_live(room_name="support-1") is False


def test_token_for_a_live_room_says_explicit_and_writes_nothing(
    api, django_assert_num_queries, django_capture_on_commit_callbacks
):
    RuleFactory(
        agent=AgentFactory(agent_name="support-agent"), room_match_value="support-*", delivery="token"
    )
    _, key = make_client("web", rooms=["support-*"])
    with django_capture_on_commit_callbacks(execute=True):
        services.room_started(name="support-1", sid="RM_1", started_at=timezone.now())
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    api.post("/api/v1/token", {"room_name": "support-0"}, format="json", **headers)  # warm
    with django_assert_num_queries(0):
        answer = api.post("/api/v1/token", {"room_name": "support-1"}, format="json", **headers)
    assert answer.status_code == 201
    assert answer.json()["dispatch"]["room_exists"] is True
    assert answer.json()["dispatch"]["agents"][0]["delivery"] == "explicit"
    assert not Dispatch.objects.exists()


def test_recording_a_token_makes_pending_and_explicit_dispatches(django_capture_on_commit_callbacks):
    AgentFactory(agent_name="in-token")
    AgentFactory(agent_name="explicit")
    minted = timezone.now().timestamp()
    with django_capture_on_commit_callbacks() as sent:
        rows = services.token_dispatches_record(
            room_name="support-2",
            participant_identity="alice",
            agents=[
                {"agent_name": "in-token", "rule": "r1", "metadata": "{}", "delivery": "token"},
                {"agent_name": "explicit", "rule": "r2", "metadata": "", "delivery": "explicit"},
                {"agent_name": "deleted-since", "rule": "r3", "metadata": "", "delivery": "token"},
            ],
            client="web",
            minted_at=minted,
        )
    assert [(d.agent_name, d.delivery, d.status, d.source) for d in rows] == [
        ("in-token", "token", "pending", "token"),
        ("explicit", "explicit", "pending", "token"),
    ]
    assert len(sent) == 1  # only the explicit one is sent to LiveKit now
    room = Room.objects.get(name="support-2")
    assert (room.status, room.tokens_minted, room.existed_before_token) == ("pending", 1, False)
    # A second participant's token for the same room: no second dispatch per agent.
    again = services.token_dispatches_record(
        room_name="support-2",
        participant_identity="bob",
        agents=[{"agent_name": "in-token", "rule": "r1", "metadata": "{}", "delivery": "token"}],
        client="web",
        minted_at=minted,
    )
    assert again[0].pk == rows[0].pk
    assert Room.objects.get(name="support-2").tokens_minted == 2


@pytest.mark.needs_redis
def test_queued_tokens_are_recorded_once_by_the_drain(api):
    """With Redis, the token path only appends to a queue; the drain records it, at least once
    (a replayed event is harmless) and never twice for one live agent."""
    from dispatchportal.redis import redis_client, redis_key
    from rooms_app.services.triggers import TOKEN_EVENTS

    RuleFactory(agent=AgentFactory(agent_name="support-agent"), room_match_value="support-*")
    _, key = make_client("web", rooms=["support-*"])
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    for who in ("ann", "bob"):
        body = {"room_name": "support-9", "participant_identity": who}
        assert api.post("/api/v1/token", body, format="json", **headers).status_code == 201
    queue = redis_key(*TOKEN_EVENTS)
    assert redis_client().llen(queue) == 2 and not Dispatch.objects.exists()

    replay = redis_client().lindex(queue, 0)
    assert services.token_events_drain() == 2
    assert redis_client().llen(queue) == 0
    redis_client().rpush(queue, replay)  # as if a killed worker's batch came round again
    assert services.token_events_drain() == 1
    rows = Dispatch.objects.filter(room__name="support-9")
    assert [(d.agent_name, d.status, d.participant_identity_trigger) for d in rows] == [
        ("support-agent", "pending", "ann")
    ]


def test_a_token_recorded_after_its_agent_joined_is_credited_with_it():
    """The real server sends a token's agent within about a second of the join, which can be
    before the token drain records the token: the agent's join is then recorded as an agent
    with no dispatch, and the token, recorded next, is what brought it."""
    from rooms_app.livekit_client import KIND_AGENT, LkParticipant

    AgentFactory(agent_name="support-agent")
    room = Room.objects.create(name="support-late", status="active", started_at=timezone.now())
    agent = LkParticipant(
        identity="agent-AJ_late",
        sid="PA_late",
        kind=KIND_AGENT,
        attributes={"lk.agent_name": "support-agent"},
        joined_at=timezone.now(),
    )
    joined = services.agent_participant_joined(room=room, participant=agent)
    assert joined.source == Dispatch.Source.RECONCILE

    [row] = services.token_dispatches_record(
        room_name="support-late",
        participant_identity="ann",
        agents=[
            {"agent_name": "support-agent", "rule": "support by token", "metadata": "{}", "delivery": "token"}
        ],
        client="web",
        minted_at=timezone.now().timestamp(),
    )

    row.refresh_from_db()
    assert (row.pk, row.status, row.source, row.delivery, row.rule_name) == (
        joined.pk,
        Dispatch.Status.AGENT_JOINED,
        Dispatch.Source.TOKEN,
        "token",
        "support by token",
    )
    assert "brought by the token minted for 'ann'" in row.events.order_by("-id").first().detail
