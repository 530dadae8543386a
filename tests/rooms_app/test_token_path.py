"""The token path's hand-off to the ledger: a token that carries agents is a fact in the
database before its answer (one INSERT, nothing else); the facts are applied to the ledger
once each, and one bad record never holds up the others."""

from __future__ import annotations

import pytest
from django.utils import timezone

from agents_app.rules import AppliedAgent
from rooms_app import services
from rooms_app.models import Dispatch, Room, TokenFact
from tests.factories import AgentFactory, RuleFactory, make_client, token_dispatches_record

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _keys(settings):
    settings.LIVEKIT_API_KEY = "token-path-key"
    settings.LIVEKIT_API_SECRET = "token-path-secret-long-enough-for-hs256-0123456789"


@pytest.fixture
def key():
    RuleFactory(
        agent=AgentFactory(agent_name="support-agent"), room_match_value="support-*", delivery="token"
    )
    _, key = make_client("web", rooms=["support-*", "other-*"])
    return key


def mint(api, key, room, identity="ann"):
    body = {"room_name": room, "participant_identity": identity}
    return api.post("/api/v1/token", body, format="json", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_the_delivery_follows_the_ledgers_room(api, key, django_capture_on_commit_callbacks):
    """LiveKit ignores a token's agents when the room exists: the token path reads that from
    the ledger in the statement that records the token, so it is never out of date."""

    def delivery() -> str:
        return mint(api, key, "support-1").json()["dispatch"]["agents"][0]["delivery"]

    assert delivery() == "token"
    services.room_observe(name="support-1", sid="RM_1", started_at=timezone.now())
    assert delivery() == "explicit"
    services.room_finished(name="support-1", sid="RM_1")
    assert delivery() == "token"
    assert [f.room_live for f in TokenFact.objects.order_by("id")] == [False, True, False]


def test_a_token_with_agents_is_recorded_before_its_answer_in_one_insert(
    api, key, django_assert_num_queries, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        services.room_observe(name="support-1", sid="RM_1", started_at=timezone.now())
    mint(api, key, "other-0")  # warm (no agent: nothing recorded)
    with django_assert_num_queries(0):
        assert mint(api, key, "other-1").status_code == 201
    with django_assert_num_queries(1):
        answer = mint(api, key, "support-1")
    assert answer.status_code == 201
    assert answer.json()["dispatch"]["room_exists"] is True
    assert answer.json()["dispatch"]["agents"][0]["delivery"] == "explicit"
    fact = TokenFact.objects.get()
    assert (fact.room_name, fact.participant_identity, fact.client, fact.room_live) == (
        "support-1",
        "ann",
        "web",
        True,
    )
    assert [(a["agent_name"], a["delivery"]) for a in fact.agents] == [("support-agent", "explicit")]
    assert fact.applied_at is None and not Dispatch.objects.exists()


def test_recording_a_token_makes_pending_and_explicit_dispatches(django_capture_on_commit_callbacks):
    AgentFactory(agent_name="in-token")
    AgentFactory(agent_name="explicit")
    minted = timezone.now().timestamp()
    with django_capture_on_commit_callbacks() as sent:
        rows = token_dispatches_record(
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
    # A second participant's token for the same room: no second dispatch per agent, but the
    # token is a fact of its own, and the live dispatch's timeline says so.
    again = token_dispatches_record(
        room_name="support-2",
        participant_identity="bob",
        agents=[{"agent_name": "in-token", "rule": "r1", "metadata": "{}", "delivery": "token"}],
        client="web",
        minted_at=minted,
    )
    assert again[0].pk == rows[0].pk
    assert Room.objects.get(name="support-2").tokens_minted == 2
    assert TokenFact.objects.filter(room_name="support-2").count() == 2
    assert "token minted for 'bob'" in again[0].events.last().detail


def test_facts_are_applied_once_each(api, key):
    for who in ("ann", "bob"):
        assert mint(api, key, "support-9", who).status_code == 201
    assert TokenFact.objects.filter(applied_at__isnull=True).count() == 2 and not Dispatch.objects.exists()
    assert services.token_facts_apply() == 2
    assert services.token_facts_apply() == 0  # a second run (a duplicated task) finds nothing
    rows = Dispatch.objects.filter(room__name="support-9")
    assert [(d.agent_name, d.status, d.participant_identity_trigger) for d in rows] == [
        ("support-agent", "pending", "ann")
    ]
    assert Room.objects.get(name="support-9").tokens_minted == 2


def test_a_poison_record_never_holds_up_the_others(api, key):
    """Records the token path could never write today, put there by hand: the run marks each
    with its error and applies every other fact, before and after them."""
    assert mint(api, key, "support-1", "before").status_code == 201
    TokenFact.objects.create(
        minted_at=timezone.now(), room_name="support-2", participant_identity="x", agents="oops"
    )
    TokenFact.objects.create(
        minted_at=timezone.now(),
        room_name="support-3",
        participant_identity="y",
        agents=[{"agent_name": "support-agent"}],
    )
    assert mint(api, key, "support-4", "after").status_code == 201

    assert services.token_facts_apply() == 2
    bad = TokenFact.objects.exclude(apply_error="").order_by("id")
    assert [f.room_name for f in bad] == ["support-2", "support-3"]
    assert all(f.applied_at is not None for f in bad)  # never tried again
    assert sorted(Dispatch.objects.values_list("room__name", flat=True)) == ["support-1", "support-4"]
    assert mint(api, key, "support-5", "later").status_code == 201
    assert services.token_facts_apply() == 1


def test_redis_down_the_token_is_answered_and_recorded(api, key, settings):
    """Redis unreachable (a closed port): the rate limit fails open, the room's liveness
    comes from the ledger, and the token's fact is in the database all the same."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    from dispatchportal import redis as portal_redis

    try:
        for who in ("ann", "bob", "cy"):
            assert mint(api, key, "support-1", who).status_code == 201
        assert not portal_redis.redis_available()  # the later requests did not try Redis again
    finally:
        portal_redis._down_until = 0.0
    assert TokenFact.objects.filter(room_name="support-1").count() == 3
    assert services.token_facts_apply() == 3


def test_a_request_whose_record_fails_leaves_the_next_ones_whole(api, key):
    """A record the database refuses (a lone UTF-16 surrogate cannot be encoded; input
    validation may refuse it earlier, this layer must hold either way): that request gets no
    token, and the requests after it are answered and recorded, with Redis's answers read in
    step (a leftover answer would make the next command read the wrong reply)."""
    from rest_framework.test import APIClient

    quiet = APIClient(raise_request_exception=False)
    bad = quiet.post(
        "/api/v1/token",
        data='{"room_name": "support-1", "participant_identity": "\\udc80"}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert bad.status_code != 201
    for who in ("ann", "bob", "cy"):
        assert mint(api, key, "support-2", who).status_code == 201
    assert sorted(TokenFact.objects.values_list("participant_identity", flat=True)) == ["ann", "bob", "cy"]
    from dispatchportal.redis import redis_client

    if redis_client() is not None:
        assert redis_client().ping() is True


@pytest.mark.needs_redis
@pytest.mark.django_db
def test_every_recorded_token_is_followed_by_an_application_task(monkeypatch):
    """The first token of a window publishes one application task (for the window's end, so
    it runs after every fact of the window); the tokens that follow in that window are covered
    by it; once the window has passed the next token publishes again."""
    from dispatchportal.celery import app as celery_app
    from rooms_app.services import facts
    from tests.rooms_app.conftest import QUEUE, queue_purge

    clock = [1000.0]
    monkeypatch.setattr(facts.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(facts, "_apply_window", facts._Window(facts.APPLY_WINDOW_S))

    def queued() -> int:
        with celery_app.connection_for_write() as conn:
            return conn.default_channel.client.llen(QUEUE)

    def intake(identity: str) -> None:
        agents = [AppliedAgent(agent_name="support-agent", metadata="{}", rule="r", delivery="token")]
        facts.token_fact_intake(
            room_name="support-1", participant_identity=identity, agents=agents, client="web"
        )

    queue_purge()
    intake("ann")
    assert queued() == 1
    clock[0] += facts.APPLY_WINDOW_S / 2
    intake("bob")  # the same window: the task already queued runs after this fact
    assert queued() == 1
    assert TokenFact.objects.count() == 2
    clock[0] += facts.APPLY_WINDOW_S
    intake("cy")
    assert queued() == 2
    queue_purge()
