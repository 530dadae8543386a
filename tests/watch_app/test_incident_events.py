"""Incidents count events, not checks, and resolve when their cause goes away; staff can
acknowledge and mute them; one opened with no alert target says it was never sent."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from rooms_app.models import Dispatch, Room
from tests.factories import AgentFactory
from watch_app import alerts, canary, checks
from watch_app.models import AlertDelivery, AlertTarget, CanaryRun, CanarySchedule, Incident

pytestmark = pytest.mark.django_db


def gave_up(agent, room_name: str, *, ago_s: float = 10) -> Dispatch:
    room = Room.objects.create(name=room_name, status="active")
    ended = timezone.now() - timedelta(seconds=ago_s)
    return Dispatch.objects.create(
        room=room,
        agent=agent,
        agent_name=agent.agent_name,
        source="rule",
        status="no_worker",
        ended_at=ended,
        last_error="no worker took the job",
    )


def test_occurrences_count_failed_dispatches_not_checks():
    agent = AgentFactory(agent_name="support-agent")
    gave_up(agent, "support-1", ago_s=30)
    for _ in range(5):  # beat runs the check again and again
        checks.dispatches_check()
    incident = Incident.objects.get(key="dispatch_gave_up:support-agent")
    assert incident.occurrences == 1

    gave_up(agent, "support-2", ago_s=20)
    gave_up(agent, "support-3", ago_s=10)
    for _ in range(3):
        checks.dispatches_check()
    incident.refresh_from_db()
    assert (incident.status, incident.occurrences) == ("open", 3)
    assert "support-3" in incident.summary


def test_a_later_join_resolves_the_incident():
    agent = AgentFactory(agent_name="support-agent")
    gave_up(agent, "support-1", ago_s=30)
    checks.dispatches_check()
    room = Room.objects.create(name="support-2", status="active")
    Dispatch.objects.create(
        room=room,
        agent=agent,
        agent_name="support-agent",
        source="rule",
        status="agent_joined",
        joined_at=timezone.now(),
    )

    checks.dispatches_check()

    incident = Incident.objects.get()
    assert (
        incident.status == "resolved"
        and incident.detail["resolution"] == "agent 'support-agent' joined a room again"
    )


def test_disabling_the_agent_resolves_its_incident():
    agent = AgentFactory(agent_name="support-agent")
    gave_up(agent, "support-1", ago_s=30)
    checks.dispatches_check()
    assert Incident.objects.get().status == "open"

    agent.enabled = False
    agent.save()
    checks.dispatches_check()

    incident = Incident.objects.get()
    assert incident.status == "resolved"
    assert incident.detail["resolution"] == "agent 'support-agent' was disabled or deleted"
    checks.dispatches_check()  # and it does not open again while the agent stays disabled
    assert Incident.objects.count() == 1


def test_a_disabled_canary_resolves_its_incident():
    agent = AgentFactory(agent_name="flaky")
    schedule = CanarySchedule.objects.create(agent=agent, alert_after_failures=2)
    for n in range(3):
        CanaryRun.objects.create(
            agent_name="flaky",
            room_name=f"dp-canary-flaky-{n}",
            status="failed",
            started_at=timezone.now() + timedelta(seconds=n),
        )
    canary.canaries_check()
    incident = Incident.objects.get(key="canary_failing:flaky")
    assert incident.occurrences == 3  # three failed runs

    schedule.enabled = False
    schedule.save()
    canary.canaries_check()

    incident.refresh_from_db()
    assert incident.status == "resolved" and "disabled" in incident.detail["resolution"]


def test_an_incident_opened_before_any_target_says_it_was_never_sent():
    incident, _ = alerts.incident_raise(key="livekit", kind="livekit_unreachable", summary="LiveKit down")
    assert alerts.incident_delivery_state(incident=incident).startswith("Never sent: no alert target exists")

    AlertTarget.objects.create(name="pager", url="https://hooks.example.com/x", secret="s" * 40)

    state = alerts.incident_delivery_state(incident=Incident.objects.get())
    assert state.startswith("Never sent: no alert target existed when it opened (the first, 'pager'"), state


def test_acknowledged_once_and_muted_incidents_send_nothing(django_capture_on_commit_callbacks):
    AlertTarget.objects.create(name="pager", url="https://hooks.example.com/x", secret="s" * 40)
    with django_capture_on_commit_callbacks(execute=False):
        incident, _ = alerts.incident_raise(key="livekit", kind="livekit_unreachable", summary="LiveKit down")
    assert AlertDelivery.objects.filter(event="opened").count() == 1

    assert alerts.incident_acknowledge(incident=incident, by="ops")
    assert not alerts.incident_acknowledge(incident=incident, by="someone else")
    incident.refresh_from_db()
    assert incident.acknowledged_by == "ops"

    alerts.incident_mute(incident=incident, until=timezone.now() + timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False):
        alerts.incident_resolve(key="livekit", summary="LiveKit answers again")
        reopened, opened = alerts.incident_raise(
            key="livekit", kind="livekit_unreachable", summary="down again"
        )
    assert opened and AlertDelivery.objects.count() == 1  # neither the resolution nor the reopening sent
    assert alerts.incident_delivery_state(incident=reopened).startswith("Never sent: muted until")


def test_saving_the_agent_disabled_resolves_its_incident_at_once(
    eager_tasks, django_capture_on_commit_callbacks
):
    """No wait for the next beat: the save itself runs the checks (after commit)."""
    agent = AgentFactory(agent_name="support-agent")
    gave_up(agent, "support-1", ago_s=30)
    checks.dispatches_check()

    with django_capture_on_commit_callbacks(execute=True):
        agent.enabled = False
        agent.save()

    assert Incident.objects.get().status == "resolved"
