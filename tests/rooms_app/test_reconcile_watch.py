"""Reconcile and issue 12: explicit rules keep their LiveKit deployment, probe rooms stay out."""

from __future__ import annotations

import pytest

from rooms_app.models import Dispatch, Room
from rooms_app.reconcile import reconcile_run
from tests.factories import AgentFactory, RuleFactory

pytestmark = pytest.mark.django_db


def test_a_rule_applied_by_reconcile_carries_deployment_and_attributes(lk):
    agent = AgentFactory(agent_name="support-agent")
    RuleFactory(
        agent=agent,
        room_match_value="sip-*",
        delivery="explicit",
        deployment="staging",
        dispatch_attributes={"a": "b"},
    )
    lk.control.create_rooms([{"name": "sip-1"}])
    assert reconcile_run().dispatched == 1
    dispatch = Dispatch.objects.get()
    assert (dispatch.deployment, dispatch.attributes) == ("staging", {"a": "b"})


def test_canary_rooms_are_not_in_the_ledger(lk):
    RuleFactory(agent=AgentFactory(agent_name="greeter"), room_match_value="*", delivery="explicit")
    lk.control.create_rooms([{"name": "dp-canary-greeter-1f2e3d4c"}, {"name": "real-1"}])
    report = reconcile_run()
    assert report.rooms_in_livekit == 1 and report.dispatched == 1
    assert list(Room.objects.values_list("name", flat=True)) == ["real-1"]
