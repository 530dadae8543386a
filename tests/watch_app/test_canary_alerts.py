"""Canary alerts from the run history: failures in a row, and a slow p95 (no server needed)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tests.factories import AgentFactory
from watch_app import canary
from watch_app.models import CanaryRun, CanarySchedule, Incident


def runs(name: str, *joins: float | None) -> None:
    last = CanaryRun.objects.filter(agent_name=name).first()  # newest first
    start = last.started_at + timedelta(seconds=1) if last else timezone.now()
    for n, join in enumerate(joins):
        CanaryRun.objects.create(
            agent_name=name,
            room_name=f"dp-canary-{name}-{start.timestamp()}-{n}",
            status="success" if join is not None else "failed",
            join_s=join,
            started_at=start + timedelta(seconds=n),
        )


def test_slow_p95_opens_and_recovers(db):
    CanarySchedule.objects.create(agent=AgentFactory(agent_name="slowpoke"), alert_p95_s=2.0)
    runs("slowpoke", *([0.5] * 17 + [3.5, 4.0, 5.0]))
    canary.canaries_check()
    incident = Incident.objects.get(key="canary_slow:slowpoke")
    assert (
        incident.status == "open"
        and "p95 dispatch-to-join 4.00 s (threshold 2 s, last 20 runs)" in incident.summary
    )
    runs("slowpoke", *([0.5] * 20))
    canary.canaries_check()
    incident.refresh_from_db()
    assert incident.status == "resolved"


def test_one_failure_is_not_an_alert_two_are(db):
    CanarySchedule.objects.create(agent=AgentFactory(agent_name="flaky"), alert_after_failures=2)
    runs("flaky", 0.4, None)
    canary.canaries_check()
    assert not Incident.objects.exists()
    runs("flaky", None)
    canary.canaries_check()
    assert Incident.objects.get().key == "canary_failing:flaky"


def test_reserved_room_names():
    name = canary.canary_room_name("Support Agent/EU")
    assert name.startswith("dp-canary-support-agent-eu-") and len(name) < 100
