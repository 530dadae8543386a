"""The doctor's words against the record (issue 18): no empty identity quoted, a disabled
agent never called enabled, the likeliest fix first for a portal-side typo, no doubled
apostrophe. Each runs the whole doctor against the emulator, as a user would."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from operator_views.doctor import diagnosis_format, room_diagnose
from rooms_app import services as room_services
from tests.factories import AgentFactory, RuleFactory, token_recorded

from .conftest import agents_in, dispatch, eventually, person_joins

pytestmark = pytest.mark.django_db


def _token_rule(agent_name: str = "support-agent"):
    agent = AgentFactory(agent_name=agent_name)
    RuleFactory(name="support rooms", agent=agent, room_match_value="support-*", delivery="token")
    return agent


def test_a_token_recorded_without_an_identity_is_not_told_as_for_empty_quotes(lk):
    """A token fact with no identity recorded (and a doctor asked with an empty identity):
    no "for ''" anywhere in what the doctor prints."""
    _token_rule()
    token_recorded("support-31", "", "support-agent")

    answer = room_diagnose(room_name="support-31")
    printed = diagnosis_format(answer)
    assert "''" not in printed, printed
    assert "'support-agent': carried in a token (no identity recorded)" in answer.links[2].summary

    asked_empty = room_diagnose(room_name="support-31", identity="")
    assert "''" not in diagnosis_format(asked_empty)


def test_a_disabled_agent_is_never_called_enabled(lk):
    """The token carried the agent; then the admin disabled it. Link 2 ("agents enabled")
    must not be ok, and it says what to do."""
    agent = _token_rule()
    token_recorded("support-32", "ann", "support-agent")
    assert room_diagnose(room_name="support-32").links[1].state == "ok"

    agent.enabled = False
    agent.save()  # as the admin saves it
    answer = room_diagnose(room_name="support-32")
    rules = answer.links[1]
    assert rules.state == "broken", rules.summary
    assert answer.first_broken is rules
    assert rules.summary == "agent 'support-agent' is disabled in the portal"
    assert "rule 'support rooms' matches room 'support-32'" in rules.cause
    assert "from before it was disabled" in rules.cause
    assert rules.fix.startswith("Enable 'support-agent' in Admin › Agents")

    one = room_diagnose(room_name="support-32", agent_name="support-agent")
    assert one.links[1].state == "broken" and "disabled" in one.links[1].summary


def test_a_disabled_agent_still_in_the_room_is_not_made_ok_by_its_presence(lk):
    agent = AgentFactory(agent_name="support-agent")
    RuleFactory(name="support rooms", agent=agent, room_match_value="support-*", delivery="explicit")
    lk.control.add_worker("support-agent")
    person_joins(lk, "support-33", "ann")
    ledger_room = room_services.room_observe(name="support-33", sid="", started_at=timezone.now())
    [row] = room_services.room_rules_apply(room=ledger_room)
    room_services.dispatch_request(dispatch_id=row.pk)
    eventually(lambda: agents_in(lk, "support-33", "support-agent"))
    assert room_diagnose(room_name="support-33").status == "healthy"

    agent.enabled = False
    agent.save()
    rules = room_diagnose(room_name="support-33").links[1]
    assert rules.state == "broken" and "disabled" in rules.summary
    assert not rules.summary.startswith("informational")


def test_a_portal_side_typo_leads_with_renaming_the_portals_agent(lk):
    """The portal's agent is 'demo-agnet'; the workers register (and are seen) as
    'demo-agent'. The first fix renames the portal's agent; starting a worker under the
    portal's name comes second. No "'demo-agnet''s"."""
    agent = AgentFactory(agent_name="demo-agnet")
    RuleFactory(name="demo rooms", agent=agent, room_match_value="demo-*", delivery="explicit")
    lk.control.add_worker("demo-agent")
    dispatch("other-app-1", "demo-agent")
    eventually(lambda: agents_in(lk, "other-app-1"))
    person_joins(lk, "demo-support-7", "ann")
    ledger_room = room_services.room_observe(name="demo-support-7", sid="", started_at=timezone.now())
    [row] = room_services.room_rules_apply(room=ledger_room)
    room_services.dispatch_request(dispatch_id=row.pk)

    answer = room_diagnose(room_name="demo-support-7", now=timezone.now() + timedelta(seconds=60))
    link = answer.first_broken
    assert link is not None and link.number == 5, answer.summary
    assert link.fix.startswith("Rename the portal's agent to 'demo-agent'"), link.fix
    rename = link.fix.index("Rename the portal's agent")
    worker = link.fix.index("WorkerOptions(agent_name='demo-agnet')")
    assert rename < worker
    assert "'demo-agent' (room 'other-app-1')" in link.cause
    printed = diagnosis_format(answer)
    assert "''s" not in printed, printed


def test_no_worker_after_the_portal_gave_up_has_no_doubled_apostrophe(lk):
    """The portal gave up on a no-worker attempt and LiveKit's dispatch is gone: the words
    name the agent without "'x''s dispatch"."""
    from livekit_boundary.client import livekit_call
    from rooms_app.models import Dispatch

    agent = AgentFactory(agent_name="demo-agnet", max_attempts=1)
    RuleFactory(name="demo rooms", agent=agent, room_match_value="demo-*", delivery="explicit")
    person_joins(lk, "demo-support-8", "ann")
    ledger_room = room_services.room_observe(name="demo-support-8", sid="", started_at=timezone.now())
    [row] = room_services.room_rules_apply(room=ledger_room)
    room_services.dispatch_request(dispatch_id=row.pk)
    row.refresh_from_db()
    error = "no worker registered as 'demo-agnet' took the job within 15 s"
    room_services.dispatch_transition(
        dispatch=row,
        to=Dispatch.Status.NO_WORKER,
        expect=(Dispatch.Status.REQUESTED,),
        detail=error,
        last_error=error,
    )
    livekit_call("delete_dispatch", "demo-support-8", row.livekit_dispatch_id)

    answer = room_diagnose(room_name="demo-support-8")
    link = answer.first_broken
    assert link is not None and link.number == 5, answer.summary
    assert "the portal gave up after 1 attempt(s)" in link.summary
    assert "no worker registered as 'demo-agnet' took the dispatch of 'demo-agnet'" in link.details
    printed = diagnosis_format(answer)
    assert "''s" not in printed, printed


def test_after_the_snapshot_the_doctor_reads_nothing(lk, django_assert_num_queries):
    """Facts are gathered once: judging and wording make no query and no LiveKit call
    (LiveKit is down by then; a call would raise)."""
    from operator_views.doctor.facts import facts_gather
    from operator_views.doctor.verdicts import walk
    from operator_views.doctor.wording import diagnosis_worded

    agent = AgentFactory(agent_name="demo-agnet")
    RuleFactory(name="demo rooms", agent=agent, room_match_value="demo-*", delivery="explicit")
    lk.control.add_worker("demo-agent")
    dispatch("other-app-1", "demo-agent")
    eventually(lambda: agents_in(lk, "other-app-1"))
    person_joins(lk, "demo-support-9", "ann")
    ledger_room = room_services.room_observe(name="demo-support-9", sid="", started_at=timezone.now())
    [row] = room_services.room_rules_apply(room=ledger_room)
    room_services.dispatch_request(dispatch_id=row.pk)
    token_recorded("demo-support-9", "bob", "demo-agnet")
    later = timezone.now() + timedelta(seconds=60)

    snap = facts_gather("demo-support-9", later)
    lk.control.faults(down=True)
    with django_assert_num_queries(0):
        answer = diagnosis_worded(
            walk(snap),
            room_name="demo-support-9",
            agent=None,
            identity=None,
            now=later,
            livekit_url=snap.livekit_url,
            staff=snap.staff,
        )
        printed = diagnosis_format(answer)
    assert answer.first_broken is not None and answer.first_broken.number == 5
    assert "Rename the portal's agent to 'demo-agent'" in printed
