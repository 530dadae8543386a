"""Canary dispatches against the real server and a real worker: timed, cleaned up, kept out of
the ledger, exported to /metrics, and alerted when failing."""

from __future__ import annotations

import json

import pytest
from django_celery_beat.models import PeriodicTask

from livekit_boundary.client import livekit_call
from rooms_app.models import Dispatch, Room, WebhookEvent
from tests.factories import AgentFactory
from tests.support import eventually
from watch_app import canary
from watch_app.models import AlertDelivery, AlertTarget, CanaryRun, CanarySchedule, Incident


@pytest.mark.django_db(transaction=True)
def test_a_canary_times_the_agent_and_leaves_no_trace(portal_on_real, agent_worker, live_server, client):
    portal_on_real.relay.target = f"{live_server.url}/livekit/webhook"  # LiveKit's webhooks reach the portal
    agent = AgentFactory(agent_name="canary-agent")
    agent_worker(agent_name="canary-agent")
    canary.canary_schedule_save(schedule=CanarySchedule(agent=agent, every_s=60, join_timeout_s=20))

    run = canary.canary_run(agent_id=agent.pk)

    assert run.status == "success", run.error
    assert run.room_name.startswith("dp-canary-canary-agent-")
    assert 0 < run.dispatch_s <= run.job_s <= run.join_s < 20
    assert run.livekit_dispatch_id.startswith("AD_") and run.job_id.startswith("AJ_")
    print(
        f"canary on the real server: dispatch {run.dispatch_s} s, job {run.job_s} s, agent joined {run.join_s} s"
    )
    assert livekit_call("list_rooms", [run.room_name]) == []  # the probe room is gone
    # LiveKit told the portal about the probe room (facts kept), but the ledger never saw it.
    eventually(
        lambda: (
            {"room_started", "participant_joined", "room_finished"}
            <= set(WebhookEvent.objects.filter(room_name=run.room_name).values_list("event", flat=True))
        ),
        timeout=10,
        what=f"the probe room's webhooks (relayed: {[json.loads(b).get('event') for b, _ in portal_on_real.relay.received]})",
    )
    assert not Room.objects.filter(name=run.room_name).exists() and not Dispatch.objects.exists()

    body = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert 'dispatchportal_canary_runs_total{agent="canary-agent",outcome="success"}' in body
    assert 'dispatchportal_canary_seconds_count{agent="canary-agent",stage="join"}' in body


@pytest.mark.django_db
def test_a_failing_canary_alerts_after_n_failures_and_resolves(
    portal_on_real,
    agent_worker,
    receiver,
    django_capture_on_commit_callbacks,
):
    from dispatchportal.celery import app as celery_app

    celery_app.conf.task_always_eager = True
    try:
        AlertTarget.objects.create(
            name="pager", url=f"{receiver.url}/hook", allow_private=True, secret="x" * 40
        )
        agent = AgentFactory(agent_name="late-agent")
        canary.canary_schedule_save(
            schedule=CanarySchedule(agent=agent, every_s=60, join_timeout_s=2, alert_after_failures=2)
        )
        with django_capture_on_commit_callbacks(execute=True):
            first = canary.canary_run(agent_id=agent.pk)
        assert first.status == "failed"
        assert first.error == "no worker registered as 'late-agent' took the job within 2 s"
        assert receiver.requests == []  # one failure is not an alert
        with django_capture_on_commit_callbacks(execute=True):
            canary.canary_run(agent_id=agent.pk)
        [alert] = [r.json() for r in receiver.requests]
        assert alert["incident"]["key"] == "canary_failing:late-agent"
        assert alert["incident"]["summary"].startswith("Canary for 'late-agent' failed 2 times in a row")

        agent_worker(agent_name="late-agent")
        CanarySchedule.objects.filter(agent=agent).update(join_timeout_s=20)
        with django_capture_on_commit_callbacks(execute=True):
            assert canary.canary_run(agent_id=agent.pk).status == "success"
        assert [r.json()["event"] for r in receiver.requests] == ["opened", "resolved"]
        assert Incident.objects.get().status == "resolved" and AlertDelivery.objects.count() == 2
        assert CanaryRun.objects.filter(agent_name="late-agent").count() == 3
    finally:
        celery_app.conf.task_always_eager = False


@pytest.mark.django_db
def test_the_schedule_is_a_beat_task_kept_in_step():
    agent = AgentFactory(agent_name="scheduled")
    schedule = canary.canary_schedule_save(schedule=CanarySchedule(agent=agent, every_s=300))
    task = PeriodicTask.objects.get(task="canary.run")
    assert (task.interval.every, task.enabled, task.kwargs) == (300, True, f'{{"agent_id": {agent.pk}}}')
    schedule.every_s, schedule.enabled = 120, False
    canary.canary_schedule_save(schedule=schedule)
    task.refresh_from_db()
    assert (task.interval.every, task.enabled) == (120, False)
    canary.canary_schedule_delete(schedule=schedule)
    assert not PeriodicTask.objects.filter(task="canary.run").exists()
