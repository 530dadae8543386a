"""A dispatch's steps in the order they happened: the token path records the request and the
job no later than LiveKit's join time, and the timeline never shows a step after a later one
(no "Agent joined +-0.324 s")."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from livekit_boundary.client import KIND_AGENT, LkDispatch, LkParticipant
from rooms_app.models import Dispatch, Room
from rooms_app.selectors import dispatch_timeline
from rooms_app.services.ledger import agent_joined_record, dispatch_transition
from rooms_app.services.lifecycle import _livekit_has_it
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def token_dispatch() -> Dispatch:
    agent = AgentFactory(agent_name="support-agent")
    room = Room.objects.create(
        name="support-1", status="active", started_at=timezone.now() - timedelta(seconds=2)
    )
    row = Dispatch.objects.create(
        room=room,
        agent=agent,
        agent_name="support-agent",
        source="token",
        delivery="token",
        participant_identity_trigger="alice",
    )
    # The token was minted a moment before its participant joined.
    Dispatch.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(seconds=3))
    row.refresh_from_db()
    return row


def _agent(joined_at) -> LkParticipant:
    return LkParticipant(
        identity="agent-AJ_abc",
        sid="PA_1",
        kind=KIND_AGENT,
        attributes={"lk.agent_name": "support-agent"},
        joined_at=joined_at,
    )


def _gaps(dispatch: Dispatch) -> list[float]:
    return [
        s.since_previous_s for s in dispatch_timeline(dispatch=dispatch) if s.since_previous_s is not None
    ]


def test_a_join_learned_after_the_request_keeps_the_request_and_job_before_it(token_dispatch):
    """The join check saw LiveKit's dispatch (requested, stamped now), then the webhook says
    the agent joined 0.324 s earlier, by LiveKit's clock: request and job happened by then."""
    dispatch_transition(dispatch=token_dispatch, to="requested", expect=("pending",), detail="join check")
    joined_at = timezone.now() - timedelta(seconds=0.324)

    assert agent_joined_record(dispatch=token_dispatch, participant=_agent(joined_at), how="webhook")

    row = Dispatch.objects.get(pk=token_dispatch.pk)
    assert row.status == "agent_joined"
    assert row.requested_at <= row.job_assigned_at <= row.joined_at == joined_at
    steps = dispatch_timeline(dispatch=row)
    assert [s.key for s in steps] == ["trigger", "requested", "job_assigned", "joined"]
    assert all(gap >= 0 for gap in _gaps(row)), _gaps(row)


def test_a_job_seen_only_through_its_agents_join_is_dated_by_the_join(token_dispatch):
    joined_at = timezone.now() - timedelta(seconds=0.5)

    agent_joined_record(dispatch=token_dispatch, participant=_agent(joined_at), how="webhook")

    row = Dispatch.objects.get(pk=token_dispatch.pk)
    assert row.job_assigned_at == row.joined_at == joined_at
    assert [s.key for s in dispatch_timeline(dispatch=row)] == [
        "trigger",
        "requested",
        "job_assigned",
        "joined",
    ]


def test_a_tokens_agent_was_requested_when_livekit_created_its_dispatch(token_dispatch):
    created = timezone.now() - timedelta(seconds=1)
    found = LkDispatch(
        id="AD_1", room="support-1", agent_name="support-agent", metadata="", created_at=created
    )
    token_dispatch.room = Room.objects.get(pk=token_dispatch.room_id)

    assert _livekit_has_it(
        dispatch=token_dispatch, found=found, detail="LiveKit dispatched it from the token"
    )

    assert Dispatch.objects.get(pk=token_dispatch.pk).requested_at == created


def test_an_older_record_with_the_request_after_the_join_is_shown_in_true_order(token_dispatch):
    """Rows recorded before the fix: the request and job stamps are when the portal saw them.
    They are shown at the join, saying when they were seen, never after it."""
    now = timezone.now()
    Dispatch.objects.filter(pk=token_dispatch.pk).update(
        status="agent_joined",
        created_at=now - timedelta(seconds=3),
        joined_at=now - timedelta(seconds=1),
        requested_at=now - timedelta(seconds=0.676),
        job_assigned_at=now - timedelta(seconds=0.670),
    )
    row = Dispatch.objects.get(pk=token_dispatch.pk)

    steps = dispatch_timeline(dispatch=row)

    assert [s.key for s in steps] == ["trigger", "requested", "job_assigned", "joined"]
    times = [s.at for s in steps]
    assert times == sorted(times)
    assert all(gap >= 0 for gap in _gaps(row)), _gaps(row)
    assert "after the agent had joined" in steps[1].detail


def test_steps_are_sorted_by_time_when_a_later_step_carries_an_earlier_stamp(token_dispatch):
    """An explicit dispatch whose job stamp (from ListDispatch) is earlier than its request
    stamp: the timeline follows the stamps, not a fixed order."""
    now = timezone.now()
    Dispatch.objects.filter(pk=token_dispatch.pk).update(
        delivery="explicit",
        source="rule",
        status="job_assigned",
        created_at=now - timedelta(seconds=3),
        requested_at=now - timedelta(seconds=1),
        job_assigned_at=now - timedelta(seconds=2),
    )
    steps = dispatch_timeline(dispatch=Dispatch.objects.get(pk=token_dispatch.pk))

    assert [s.key for s in steps] == ["trigger", "job_assigned", "requested", "joined"]
    assert steps[-1].at is None and steps[-1].state == "waiting"


def test_a_tokens_agent_is_asked_for_when_the_token_was_minted(token_dispatch):
    """The token's fact reaches the ledger a moment after the mint (a drain), by when the agent
    may have joined: the timeline starts at the mint, not at the row's creation."""
    from rooms_app.models import TokenFact

    now = timezone.now()
    minted = now - timedelta(seconds=2)
    TokenFact.objects.create(
        minted_at=minted,
        room_name="support-1",
        participant_identity="alice",
        agents=[{"agent_name": "support-agent"}],
    )
    Dispatch.objects.filter(pk=token_dispatch.pk).update(
        status="agent_joined",
        created_at=now - timedelta(seconds=0.5),  # applied after the join
        joined_at=now - timedelta(seconds=1),
    )

    steps = dispatch_timeline(dispatch=Dispatch.objects.select_related("room").get(pk=token_dispatch.pk))

    assert [s.key for s in steps] == ["trigger", "requested", "job_assigned", "joined"]
    assert steps[0].at == minted
    assert all(gap >= 0 for gap in (s.since_previous_s for s in steps if s.since_previous_s is not None))
