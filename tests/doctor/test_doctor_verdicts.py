"""The doctor reads the portal's own verdicts before what LiveKit lists (issue 16, items 4, 5),
against the emulator: a dead worker's agent LiveKit still lists, a job LiveKit lists as running
after the portal gave up, an attempt being retried, and an expectation the rules no longer
produce. Worker health answers are written as the poll writes them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from operator_views.doctor import room_diagnose
from rooms_app import services as room_services
from rooms_app.models import Dispatch
from rooms_app.selectors import room_state
from tests.factories import AgentFactory, RuleFactory, token_recorded
from watch_app.alerts import incident_raise
from watch_app.models import WorkerEndpoint

from .conftest import agents_in, eventually, jobs_of, person_joins

pytestmark = pytest.mark.django_db
S = Dispatch.Status
REFUSED = "cannot reach http://10.0.0.7:8081: ConnectionRefusedError"


def _explicit(agent_name: str = "support-agent", **fields):
    agent = AgentFactory(agent_name=agent_name, **fields)
    RuleFactory(name="support rooms", agent=agent, room_match_value="support-*", delivery="explicit")
    return agent


def _joined(lk, room: str) -> Dispatch:
    """The portal dispatched the agent and it joined (as the webhook would record it)."""
    person_joins(lk, room, "ann")
    ledger_room = room_services.room_observe(name=room, sid="", started_at=timezone.now())
    [row] = room_services.room_rules_apply(room=ledger_room)
    room_services.dispatch_request(dispatch_id=row.pk)
    [agent] = eventually(lambda: agents_in(lk, room))
    row.refresh_from_db()
    room_services.agent_participant_joined(
        room=ledger_room,
        participant=next(p for p in _participants(room) if p.identity == agent["identity"]),
    )
    row.refresh_from_db()
    assert row.status == S.AGENT_JOINED
    return row


def _participants(room: str):
    from livekit_boundary.client import livekit_call

    return livekit_call("list_participants", room)


def _worker(agent, *, answered_ago: float, jobs: int, healthy: bool, error: str = "", polled_ago: float = 0):
    now = timezone.now()
    return WorkerEndpoint.objects.create(
        agent=agent,
        url=f"http://10.0.0.{WorkerEndpoint.objects.count() + 7}:8081",
        healthy=healthy,
        answered_at=now - timedelta(seconds=answered_ago),
        polled_at=now - timedelta(seconds=polled_ago),
        active_jobs=jobs,
        load=0.0,
        last_error=error,
    )


def test_a_dead_workers_agent_that_livekit_still_lists_is_not_present(lk):
    agent = _explicit()
    lk.control.add_worker("support-agent")
    row = _joined(lk, "support-1")
    _worker(agent, answered_ago=0, jobs=1, healthy=True)  # polled after the agent joined
    assert room_diagnose(room_name="support-1").status == "healthy"

    WorkerEndpoint.objects.filter(agent=agent).update(healthy=False, last_error=REFUSED)
    _worker(agent, answered_ago=0, jobs=0, healthy=True)  # the other worker: no job
    answer = room_diagnose(room_name="support-1", now=timezone.now() + timedelta(seconds=4))

    assert agents_in(lk, "support-1")  # LiveKit lists it
    assert answer.status == "broken" and answer.first_broken.number == 7, answer.summary
    assert answer.first_broken.summary == (
        f"'support-agent' ({row.participant_identity}) is still listed by LiveKit, but the agent's worker "
        f"stopped answering 4 s ago ({REFUSED})"
    )
    assert "about 20 s" in answer.first_broken.cause
    assert answer.links[7].state == "ok"  # a ghost is not a duplicate nor an unmanaged agent


def test_a_silent_worker_that_cannot_be_tied_to_the_room_leaves_the_room_healthy(lk):
    """Another worker of the agent runs a job too: which room's agent died cannot be told from
    job counts, so the portal waits for LiveKit rather than guess."""
    agent = _explicit()
    lk.control.add_worker("support-agent")
    _joined(lk, "support-2")
    _worker(agent, answered_ago=0, jobs=1, healthy=False, error=REFUSED)
    _worker(agent, answered_ago=0, jobs=1, healthy=True)
    assert room_diagnose(room_name="support-2").status == "healthy"


def test_after_giving_up_the_ledger_and_the_incident_outrank_a_job_livekit_lists_as_running(lk):
    agent = _explicit(max_attempts=1)
    lk.control.add_worker("support-agent")
    row = _joined(lk, "support-3")
    _worker(agent, answered_ago=0, jobs=1, healthy=False, error=REFUSED)
    reason = f"{room_services.WORKER_STOPPED} (last answer 10:00:00 UTC, 1 job(s) then; {REFUSED})"
    # The ledger's verdict, without the clean-up: LiveKit keeps the job and the ghost.
    assert room_services.dispatch_transition(
        dispatch=row, to=S.FAILED, expect=(S.AGENT_JOINED,), detail=reason, last_error=reason
    )
    assert room_services.dispatch_retry(dispatch=row) is None  # no attempt left: gave up
    incident_raise(
        key="dispatch_gave_up:support-agent",
        kind="dispatch_gave_up",
        subject="support-agent",
        summary="gave up",
        detail={"room": "support-3", "dispatch_id": row.pk, "status": "failed"},
    )
    [job] = jobs_of(lk, "support-3", "support-agent")
    assert job["status"] == "JS_RUNNING"

    answer = room_diagnose(room_name="support-3", now=timezone.now() + timedelta(seconds=3))

    assert answer.status == "broken" and answer.exit_code == 1, answer.summary
    assert answer.first_broken.number == 7
    assert "attempt 1 of 'support-agent' failed: the agent's worker stopped answering 3 s ago" in (
        answer.first_broken.summary
    )
    assert "the portal gave up after 1 attempt(s)" in answer.first_broken.summary
    assert "incident 'dispatch_gave_up:support-agent' opened at" in answer.first_broken.summary
    assert answer.links[5].state == "ok" and "is running" in answer.links[5].summary  # LiveKit's view, kept


def test_a_timed_out_attempt_is_broken_and_retrying_like_a_no_worker_one(lk):
    agent = _explicit(max_attempts=3)
    lk.control.add_worker("support-agent", delay_ms=60_000)  # takes jobs, never in time
    person_joins(lk, "support-4", "ann")
    ledger_room = room_services.room_observe(name="support-4", sid="", started_at=timezone.now())
    [first] = room_services.room_rules_apply(room=ledger_room)
    room_services.dispatch_request(dispatch_id=first.pk)
    first.refresh_from_db()
    error = "job AJ_x was running but its participant 'agent-AJ_x' did not join within 15 s"
    assert room_services.dispatch_transition(
        dispatch=first, to=S.TIMED_OUT, expect=(S.REQUESTED,), detail=error, last_error=error
    )
    second = room_services.dispatch_retry(dispatch=first)
    room_services.dispatch_request(dispatch_id=second.pk)

    answer = room_diagnose(room_name="support-4")

    assert answer.status == "broken", answer.summary
    assert answer.first_broken.number == 7
    assert answer.first_broken.summary == (
        f"attempt 1 of 'support-agent' timed out: {error}; retrying: attempt 2 of 3 (requested)"
    )
    assert agent.max_attempts == 3


def test_a_no_worker_attempt_being_retried_says_retrying_too(lk):
    _explicit(max_attempts=2)
    person_joins(lk, "support-5", "ann")
    ledger_room = room_services.room_observe(name="support-5", sid="", started_at=timezone.now())
    [first] = room_services.room_rules_apply(room=ledger_room)
    room_services.dispatch_request(dispatch_id=first.pk)
    first.refresh_from_db()
    error = "no worker registered as 'support-agent' took the job within 15 s"
    room_services.dispatch_transition(
        dispatch=first, to=S.NO_WORKER, expect=(S.REQUESTED,), detail=error, last_error=error
    )
    second = room_services.dispatch_retry(dispatch=first)
    room_services.dispatch_request(dispatch_id=second.pk)

    answer = room_diagnose(room_name="support-5")

    assert answer.first_broken.number == 5, answer.summary
    assert answer.first_broken.summary == (
        f"attempt 1 of 'support-agent' found no worker ({error}); retrying: attempt 2 of 2 (requested)"
    )
    assert "no worker" in answer.first_broken.cause  # LiveKit's side of it is kept


def test_an_expectation_the_fixed_rule_no_longer_produces_does_not_keep_the_room_unready(lk):
    typo = AgentFactory(agent_name="doc-agnet")
    right = AgentFactory(agent_name="doc-agent")
    rule = RuleFactory(name="docs", agent=typo, room_match_value="docs-*", delivery="token")
    [old] = token_recorded("docs-1", "ann", "doc-agnet")
    person_joins(lk, "docs-1", "ann")
    ledger_room = room_services.room_observe(name="docs-1", sid="", started_at=timezone.now())
    room_services.dispatch_transition(
        dispatch=old, to=S.NO_WORKER, expect=(S.PENDING,), detail="no worker", last_error="no worker"
    )
    assert room_state(room_name="docs-1").ready is False

    rule.agent = right
    rule.save()
    lk.control.add_worker("doc-agent")
    fixed, _ = room_services.dispatch_create(room=ledger_room, agent=right, source=Dispatch.Source.API)
    room_services.dispatch_request(dispatch_id=fixed.pk)
    [agent] = eventually(lambda: agents_in(lk, "docs-1"))
    room_services.agent_participant_joined(
        room=ledger_room,
        participant=next(p for p in _participants("docs-1") if p.identity == agent["identity"]),
    )

    state = room_state(room_name="docs-1")
    assert state.ready is True and [a.agent_name for a in state.agents] == ["doc-agent"]
    answer = room_diagnose(room_name="docs-1")
    assert answer.status == "healthy", answer.summary
    assert answer.expected_agents == ["doc-agent"]
    assert any("'doc-agnet' is no longer expected" in d for d in answer.links[1].details)


def test_an_expectation_stays_while_no_agent_the_rules_give_is_present(lk):
    """Until the right agent is there, the old token's agent is still what the room waits for."""
    typo = AgentFactory(agent_name="doc-agnet")
    rule = RuleFactory(name="docs", agent=typo, room_match_value="docs-*", delivery="token")
    [old] = token_recorded("docs-2", "ann", "doc-agnet")
    person_joins(lk, "docs-2", "ann")
    room_services.room_observe(name="docs-2", sid="", started_at=timezone.now())
    room_services.dispatch_transition(
        dispatch=old, to=S.NO_WORKER, expect=(S.PENDING,), detail="no worker", last_error="no worker"
    )
    rule.agent = AgentFactory(agent_name="doc-agent")
    rule.save()

    assert [a.agent_name for a in room_state(room_name="docs-2").agents] == ["doc-agnet"]
    answer = room_diagnose(room_name="docs-2")
    assert "doc-agnet" in answer.expected_agents and answer.status == "broken", answer.summary


def test_an_agent_that_fell_back_is_told_as_fallen_back_not_given_up(lk):
    backup = AgentFactory(agent_name="backup-agent")
    _explicit(max_attempts=1, fallback=backup)
    person_joins(lk, "support-6", "ann")
    ledger_room = room_services.room_observe(name="support-6", sid="", started_at=timezone.now())
    [first] = room_services.room_rules_apply(room=ledger_room)
    room_services.dispatch_request(dispatch_id=first.pk)
    first.refresh_from_db()
    error = "job AJ_y was running but its participant 'agent-AJ_y' did not join within 15 s"
    room_services.dispatch_transition(
        dispatch=first, to=S.TIMED_OUT, expect=(S.REQUESTED,), detail=error, last_error=error
    )
    assert room_services.dispatch_retry(dispatch=first).agent_name == "backup-agent"

    answer = room_diagnose(room_name="support-6", agent_name="support-agent")

    assert answer.first_broken.number == 7, answer.summary
    assert answer.first_broken.summary == (
        f"attempt 1 of 'support-agent' timed out: {error}; the portal fell back to 'backup-agent' (pending)"
    )
