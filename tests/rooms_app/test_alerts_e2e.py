"""End to end with the Celery worker: a dispatch that gives up reaches the on-call receiver as
one signed alert within seconds, and the agent joining again sends the resolved message."""

from __future__ import annotations

import hashlib
import hmac

from agents_app.models import DispatchRule
from rooms_app.models import Dispatch
from tests.factories import AgentFactory
from tests.receiver import receiver  # noqa: F401  (fixture)
from watch_app import checks
from watch_app.models import AlertDelivery, AlertTarget, Incident

from .conftest import eventually

SECRET = "e2e-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def test_give_up_alerted_once_then_resolved(e2e, receiver):  # noqa: F811
    AlertTarget.objects.create(name="pager", url=f"{receiver.url}/hook", allow_private=True, secret=SECRET)
    agent = AgentFactory(agent_name="support-agent", join_deadline_s=1, max_attempts=1)
    DispatchRule.objects.create(
        name="support", agent=agent, room_match_value="support-*", delivery="explicit"
    )

    e2e.control.create_rooms([{"name": "support-1"}, {"name": "support-2"}])
    eventually(lambda: len(receiver.requests) >= 1, timeout=15, what="alert received")
    gave_up = Dispatch.objects.filter(status="no_worker").order_by("ended_at")
    eventually(lambda: gave_up.count() == 2, timeout=10, what="both gave up")
    alert = receiver.requests[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), alert.body, hashlib.sha256).hexdigest()
    assert alert.headers["x-dispatchportal-signature"] == expected
    body = alert.json()
    assert body["event"] == "opened" and body["incident"]["key"] == "dispatch_gave_up:support-agent"
    assert "no worker registered as 'support-agent'" in body["incident"]["summary"]
    delay = alert.at - gave_up.first().ended_at.timestamp()
    print(f"alert end-to-end delay (give-up -> receiver): {delay:.3f} s")
    # Two rooms gave up: one incident, one message.
    assert Incident.objects.count() == 1 and AlertDelivery.objects.filter(event="opened").count() == 1

    e2e.control.add_worker("support-agent")
    e2e.control.create_rooms([{"name": "support-3"}])
    eventually(
        lambda: Dispatch.objects.filter(room__name="support-3", status="agent_joined").exists(), timeout=10
    )
    checks.dispatches_check()  # what beat runs every ALERTS_EVALUATE_INTERVAL_S
    eventually(lambda: len(receiver.requests) == 2, timeout=10, what="resolved message")
    assert receiver.requests[1].json()["event"] == "resolved"
    assert Incident.objects.get().status == "resolved"
