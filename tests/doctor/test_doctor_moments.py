"""The doctor at several moments of one story, against the emulator: it names the cause at
every moment, never blames a part it can check is fine (the Celery worker's heartbeat), and
lets what LiveKit shows outrank what the ledger inferred."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from operator_views.doctor import room_diagnose
from rooms_app import services as room_services
from rooms_app.models import Dispatch, Room, WorkerHeartbeat
from tests.factories import AgentFactory, RuleFactory, token_recorded

from .conftest import agents_in, dispatch, eventually, person_joins

pytestmark = pytest.mark.django_db


def _link(diagnosis, number: int):
    return diagnosis.links[number - 1]


@pytest.fixture
def waiting_dispatch(lk):
    """A live room whose explicit dispatch the ledger holds as pending (not sent yet)."""
    agent = AgentFactory(agent_name="support-agent")
    RuleFactory(name="support rooms", agent=agent, room_match_value="support-*", delivery="explicit")
    person_joins(lk, "support-1", "ann")
    room = room_services.room_observe(name="support-1", sid="", started_at=timezone.now())
    row, _ = room_services.dispatch_create(room=room, agent=agent, source=Dispatch.Source.RULE)
    return row


def test_a_waiting_dispatch_blames_the_worker_only_when_its_heartbeat_is_missing(waiting_dispatch):
    stopped = room_diagnose(room_name="support-1")
    assert stopped.first_broken.number == 4
    assert "the Celery worker that sends it to LiveKit is not running" in stopped.first_broken.cause
    assert "none ever sent a heartbeat" in stopped.first_broken.cause

    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname="celery@old", started_at=now, beat_at=now - timedelta(minutes=5))
    still = room_diagnose(room_name="support-1")
    assert "its last heartbeat was" in still.first_broken.cause and "5 min ago" in still.first_broken.cause

    room_services.worker_heartbeat(hostname="celery@host", started_at=now)
    running = room_diagnose(room_name="support-1")
    assert running.status == "waiting" and running.exit_code == 0, running.summary
    assert "the Celery worker (running) is sending it to LiveKit" in _link(running, 4).summary


def test_an_agent_present_makes_upstream_doubts_informational(lk):
    """The agent joined through a path the ledger cannot explain (another app dispatched it):
    the room is healthy; what looked wrong upstream is kept as information."""
    agent = AgentFactory(agent_name="support-agent")
    RuleFactory(name="support rooms", agent=agent, room_match_value="support-*", delivery="token")
    lk.control.add_worker("support-agent")
    person_joins(lk, "support-2", "ann")  # a token minted elsewhere, without the agent
    dispatch("support-2", "support-agent")
    eventually(lambda: agents_in(lk, "support-2", "support-agent"))
    answer = room_diagnose(room_name="support-2")
    assert answer.status == "healthy" and answer.exit_code == 0, answer.summary
    token = _link(answer, 3)
    assert token.state == "ok" and token.summary.startswith(
        "informational (the agent is present and running)"
    )
    assert any("never" in d or "minted" in d for d in token.details)


def test_a_token_agent_converted_at_the_join_is_told_as_it_happened(lk):
    agent = AgentFactory(agent_name="support-agent")
    RuleFactory(name="support rooms", agent=agent, room_match_value="support-*", delivery="token")
    [row] = token_recorded("support-3", "ann", "support-agent")
    person_joins(lk, "support-3", "other-app")
    person_joins(lk, "support-3", "ann", agents=["support-agent"])  # ignored: the room existed
    Room.objects.filter(name="support-3").update(status="active")
    room_services.dispatch_deliver_explicitly(dispatch=row, why="'ann' joined a room that already existed")
    answer = room_diagnose(room_name="support-3")
    token = _link(answer, 3)
    assert token.state == "ok"
    # The words agree with the room's record: it did not exist when the token was minted
    # (another join created it before 'ann' joined), so the doctor does not say it "existed before".
    assert Room.objects.get(name="support-3").existed_before_token is False
    assert "existed before" not in token.summary
    assert "'support-3' was created" in token.summary
    assert "after the token was minted and before its holder joined" in token.summary
    assert token.summary.endswith("so the portal dispatched it explicitly")
