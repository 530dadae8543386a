"""The one participant -> dispatch matcher (rooms_app/services/matching.py) that webhooks,
reconcile and the deadline check share: pure, no database."""

from __future__ import annotations

from livekit_boundary.client import KIND_AGENT, LkParticipant
from rooms_app.models import Dispatch
from rooms_app.services.matching import Verdict, participant_match

S = Dispatch.Status


def row(pk: int, status: str, *, agent: str = "support-agent", identity: str = "", job: str = "") -> Dispatch:
    return Dispatch(pk=pk, agent_name=agent, status=status, participant_identity=identity, livekit_job_id=job)


def agent(identity: str, name: str = "support-agent") -> LkParticipant:
    return LkParticipant(
        identity=identity,
        sid="PA_" + identity,
        kind=KIND_AGENT,
        attributes={"lk.agent_name": name},
        joined_at=None,
    )


def test_the_live_row_waiting_for_its_agent_takes_the_first_of_its_name():
    waiting = row(2, S.REQUESTED)
    match = participant_match(participant=agent("agent-AJ_a"), rows=[waiting, row(1, S.TIMED_OUT)])
    assert (match.verdict, match.dispatch) == (Verdict.JOINED, waiting)


def test_a_second_agent_of_one_name_is_a_duplicate_while_the_first_is_present():
    joined = row(2, S.AGENT_JOINED, identity="agent-AJ_a")
    second = agent("agent-AJ_b")
    assert participant_match(participant=second, rows=[joined]).verdict is Verdict.DUPLICATE
    assert participant_match(
        participant=second, rows=[joined], present={"agent-AJ_a", "agent-AJ_b"}
    ).verdict is (Verdict.DUPLICATE)
    # The recorded agent is gone (its left event lost): the newcomer is this row's agent now.
    assert (
        participant_match(participant=second, rows=[joined], present={"agent-AJ_b"}).verdict is Verdict.JOINED
    )


def test_the_recorded_agent_is_always_its_rows_own():
    joined = row(2, S.AGENT_JOINED, identity="agent-AJ_a")
    assert participant_match(participant=agent("agent-AJ_a"), rows=[joined]).dispatch is joined


def test_an_agent_named_by_its_job_belongs_to_that_row_even_unrecorded():
    cancelled = row(1, S.CANCELLED, job="AJ_x")
    live = row(2, S.REQUESTED)
    match = participant_match(participant=agent("agent-AJ_x"), rows=[live, cancelled])
    assert match.verdict is Verdict.CANCELLED and match.dispatch is cancelled


def test_a_late_join_after_a_cancel_is_the_cancelled_agent_not_a_new_one():
    cancelled = row(1, S.CANCELLED)
    match = participant_match(participant=agent("agent-AJ_late"), rows=[cancelled])
    assert match.verdict is Verdict.CANCELLED and match.dispatch is cancelled


def test_after_a_give_up_a_late_agent_is_new_and_may_be_adopted():
    assert (
        participant_match(participant=agent("agent-AJ_late"), rows=[row(1, S.TIMED_OUT)]).verdict
        is Verdict.NEW
    )
    assert participant_match(participant=agent("agent-AJ_late"), rows=[]).verdict is Verdict.NEW


def test_claims_made_earlier_in_a_pass_count_as_the_rows_agent():
    waiting = row(2, S.REQUESTED)
    claimed = {2: "agent-AJ_a"}
    present = {"agent-AJ_a", "agent-AJ_b"}
    match = participant_match(
        participant=agent("agent-AJ_b"), rows=[waiting], present=present, claimed=claimed
    )
    assert match.verdict is Verdict.DUPLICATE


def test_other_names_and_non_agents_do_not_match():
    joined = row(2, S.AGENT_JOINED, identity="agent-AJ_a")
    assert (
        participant_match(participant=agent("agent-AJ_o", name="other"), rows=[joined]).verdict is Verdict.NEW
    )
    person = LkParticipant(identity="alice", sid="PA_1", kind=0, attributes={}, joined_at=None)
    assert participant_match(participant=person, rows=[joined]).verdict is Verdict.NEW
