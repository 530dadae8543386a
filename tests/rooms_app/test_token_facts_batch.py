"""Token facts applied in batches: a batch leaves the ledger exactly as the same facts applied
one at a time, in the orders that really happen (a room a webhook made live before its facts
were applied, two tokens for one agent in one room, an agent disabled or deleted since its
token, a cancel after the token, a room already live at minting); a record that cannot be
applied is marked and never holds up the others; two runs never apply one fact, and a room's
facts are applied in the order they were recorded."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from agents_app.models import Agent
from rooms_app import services
from rooms_app.models import Dispatch, DispatchEvent, Room, TokenFact
from rooms_app.services import facts
from tests.factories import AgentFactory


def _agent(name: str, delivery: str = "token", rule: str = "r") -> dict[str, str]:
    return {"agent_name": name, "rule": rule, "metadata": json.dumps({"for": name}), "delivery": delivery}


def scenario(base: datetime) -> None:
    """Facts recorded in this order, and what happened in the ledger before they are applied."""
    AgentFactory(agent_name="greeter", join_deadline_s=20)
    AgentFactory(agent_name="helper")
    AgentFactory(agent_name="retired")
    AgentFactory(agent_name="deleted")

    def fact(seconds: int, room: str, who: str, agents: Any, live: bool = False) -> None:
        TokenFact.objects.create(
            minted_at=base + timedelta(seconds=seconds),
            room_name=room,
            participant_identity=who,
            client="web",
            agents=agents,
            room_live=live,
        )

    # The token's join created the room and LiveKit's room_started webhook was applied first.
    fact(1, "live-1", "ann", [_agent("greeter")])
    # Two participants' tokens for one room and one agent.
    fact(2, "two-1", "ann", [_agent("greeter"), _agent("helper", "explicit")])
    fact(3, "two-1", "bob", [_agent("greeter")])
    # A record the token path never writes (found by hand in a database): marked, skipped.
    fact(4, "bad-1", "x", "oops")
    # The agent was disabled after its token went out (LiveKit still dispatches it: the
    # token carries it), and another was deleted (nothing to record).
    fact(5, "off-1", "cy", [_agent("retired"), _agent("deleted")])
    # A rule name longer than the ledger keeps: the database refuses the row.
    fact(6, "long-1", "dee", [_agent("greeter", rule="r" * 300)])
    # The room was live when the token was minted: the portal dispatches explicitly.
    fact(7, "was-live-1", "eve", [_agent("greeter", "explicit")])
    # The agent was cancelled in the room after this token was minted (applied late).
    fact(8, "cancelled-1", "fay", [_agent("greeter")])
    fact(9, "two-1", "cy", [_agent("helper", "explicit")])

    services.room_observe(name="live-1", sid="RM_live", started_at=base + timedelta(seconds=30))
    services.room_observe(name="was-live-1", sid="RM_was", started_at=base - timedelta(minutes=1))
    Agent.objects.filter(agent_name="retired").update(enabled=False)
    Agent.objects.filter(agent_name="deleted").delete()
    cancelled = Room.objects.create(name="cancelled-1")
    Dispatch.objects.create(
        room=cancelled,
        agent=Agent.objects.get(agent_name="greeter"),
        agent_name="greeter",
        source="api",
        status="cancelled",
        ended_at=base + timedelta(seconds=60),
    )


def ledger() -> dict[str, list[tuple[Any, ...]]]:
    return {
        "rooms": [
            (r.name, r.status, r.tokens_minted, r.first_token_at, r.last_token_at, r.existed_before_token)
            for r in Room.objects.order_by("name")
        ],
        "dispatches": [
            (
                d.room.name,
                d.agent_name,
                d.status,
                d.delivery,
                d.source,
                d.participant_identity_trigger,
                d.rule_name[:3],
                d.metadata,
                d.requested_by,
                d.deadline_at is not None,
                [(e.previous_status, e.status, e.detail) for e in d.events.order_by("at", "id")],
            )
            for d in Dispatch.objects.select_related("room").order_by("room__name", "agent_name", "id")
        ],
        "facts": [
            (f.room_name, f.participant_identity, f.applied_at is not None, f.apply_error.split(":")[0])
            for f in TokenFact.objects.order_by("id")
        ],
    }


def ledger_clear() -> None:
    for model in (DispatchEvent, Dispatch, Room, TokenFact, Agent):
        model.objects.all().delete()


@pytest.mark.django_db
def test_a_batch_leaves_the_ledger_as_the_facts_applied_one_by_one(
    monkeypatch, django_capture_on_commit_callbacks
):
    base = timezone.now() - timedelta(minutes=5)
    scenario(base)
    with django_capture_on_commit_callbacks() as batch_sent:
        assert services.token_facts_apply() == 7
    batched = ledger()

    ledger_clear()
    scenario(base)
    monkeypatch.setattr(facts, "APPLY_BATCH", 1)
    with django_capture_on_commit_callbacks() as single_sent:
        assert services.token_facts_apply() == 7
    assert ledger() == batched
    # One CreateDispatch per explicit dispatch, one deadline check for the live room's agent.
    assert len(batch_sent) == len(single_sent) == 3

    dispatches = {(d[0], d[1]): d for d in batched["dispatches"]}
    assert sorted(dispatches) == [
        ("cancelled-1", "greeter"),
        ("live-1", "greeter"),
        ("off-1", "retired"),
        ("two-1", "greeter"),
        ("two-1", "helper"),
        ("was-live-1", "greeter"),
    ]
    # The room a webhook made live first: the token's agent waits for LiveKit, deadline armed.
    assert dispatches["live-1", "greeter"][2:10] == (
        "pending", "token", "token", "ann", "r", '{"for": "greeter"}', "web", True
    )  # fmt: skip
    # Two tokens, one agent: one live dispatch (the first token's), the second noted on it.
    two = dispatches["two-1", "greeter"]
    assert (two[2], two[5], two[9]) == ("pending", "ann", False)
    assert [e[2] for e in two[10]] == [
        "token minted of 'ann' by web (rule 'r'): carried in the token",
        "token minted for 'bob' by web also carried 'greeter' (token delivery); this dispatch stands",
    ]
    helper = dispatches["two-1", "helper"]
    assert (helper[3], helper[5]) == ("explicit", "ann")
    assert "token minted for 'cy' by web also carried 'helper'" in helper[10][-1][2]
    assert dispatches["off-1", "retired"][2:4] == ("pending", "token")
    assert dispatches["was-live-1", "greeter"][2:4] == ("pending", "explicit")
    # The cancel stands: no new dispatch, the late token noted on the cancelled one.
    cancel = dispatches["cancelled-1", "greeter"]
    assert cancel[2] == "cancelled" and "before this cancel also carried 'greeter'" in cancel[10][-1][2]

    rooms = {r[0]: r for r in batched["rooms"]}
    assert rooms["two-1"][1:3] == ("pending", 3)
    assert rooms["two-1"][3] < rooms["two-1"][4]  # first and last token
    assert rooms["live-1"][1:3] == ("active", 1) and rooms["live-1"][5] is False
    assert rooms["was-live-1"][5] is True  # LiveKit ignored the token's agents
    assert "bad-1" not in rooms and "long-1" not in rooms  # nothing of a refused record stays
    assert [(f[0], f[3]) for f in batched["facts"] if f[3]] == [
        ("bad-1", "ValueError"),
        ("long-1", "DataError"),
    ]
    assert all(f[2] for f in batched["facts"])  # every fact marked: none is tried again


@pytest.mark.django_db
def test_a_fact_for_a_room_made_live_later_arms_its_deadline_then(django_capture_on_commit_callbacks):
    """The other order: the fact is applied while the room is pending, then LiveKit reports
    the room: the token's agent gets its deadline from the room's start."""
    AgentFactory(agent_name="greeter", join_deadline_s=20)
    TokenFact.objects.create(
        minted_at=timezone.now(), room_name="late-1", participant_identity="ann", agents=[_agent("greeter")]
    )
    assert services.token_facts_apply() == 1
    dispatch = Dispatch.objects.get()
    assert (dispatch.status, dispatch.deadline_at) == ("pending", None)
    with django_capture_on_commit_callbacks() as sent:
        services.room_observe(name="late-1", sid="RM_1", started_at=timezone.now())
    dispatch.refresh_from_db()
    assert dispatch.deadline_at is not None and len(sent) == 1


@pytest.mark.django_db(transaction=True)
def test_two_runs_never_apply_one_fact_and_keep_a_rooms_order():
    """Another run holds the first fact (a second Celery worker mid-batch): this run skips it,
    leaves the same room's later fact for after it (a room's facts apply in order), and
    applies the other rooms'. Once the other run is done, the room's facts apply in order."""
    from tests.rooms_app.conftest import queue_purge

    AgentFactory(agent_name="greeter")
    now = timezone.now()
    rows = [
        TokenFact.objects.create(
            minted_at=now, room_name=room, participant_identity=who, agents=[_agent("greeter")]
        )
        for room, who in (("r-1", "ann"), ("r-2", "bob"), ("r-1", "cy"))
    ]
    held, release = threading.Event(), threading.Event()

    def other_run() -> None:
        try:
            with transaction.atomic():
                TokenFact.objects.select_for_update().get(pk=rows[0].pk)
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=other_run)
    thread.start()
    try:
        assert held.wait(10)
        assert services.token_facts_apply() == 1
        applied = set(
            TokenFact.objects.filter(applied_at__isnull=False).values_list("participant_identity", flat=True)
        )
        assert applied == {"bob"}
        assert list(Dispatch.objects.values_list("room__name", flat=True)) == ["r-2"]
    finally:
        release.set()
        thread.join(10)
    assert services.token_facts_apply() == 2
    [r1] = Dispatch.objects.filter(room__name="r-1")
    assert r1.participant_identity_trigger == "ann"  # the older token's, as recorded
    assert "token minted for 'cy'" in r1.events.order_by("id").last().detail
    queue_purge()  # the follow-up run the deferral scheduled


@pytest.mark.django_db
def test_a_batch_takes_the_same_statements_whatever_its_size():
    """Set-based: 200 facts in 100 rooms cost the statements that 4 facts in 2 rooms do."""
    from django.test.utils import CaptureQueriesContext

    AgentFactory(agent_name="greeter")
    AgentFactory(agent_name="helper")

    def apply(facts: int, prefix: str) -> int:
        now = timezone.now()
        TokenFact.objects.bulk_create(
            TokenFact(
                minted_at=now,
                room_name=f"{prefix}-{n // 2}",
                participant_identity=f"u{n}",
                agents=[_agent("greeter"), _agent("helper")],
            )
            for n in range(facts)
        )
        with CaptureQueriesContext(connection) as queries:
            assert services.token_facts_apply() == facts
        return len(queries)

    few = apply(4, "few")
    assert apply(200, "many") == few <= 20
    assert Dispatch.objects.count() == 204 and DispatchEvent.objects.count() == 408
    assert set(Room.objects.values_list("tokens_minted", flat=True)) == {2}
