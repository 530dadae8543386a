"""Bounded growth: rows past their retention are deleted by the periodic sweep, in batches,
and newer rows and live ones (rooms, dispatches, facts not yet applied, canaries running,
deliveries pending) never are."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dispatchportal.retention import retention_apply
from rooms_app.models import Dispatch, DispatchEvent, Room, TokenFact, WebhookEvent
from watch_app.models import AlertDelivery, AlertTarget, CanaryRun, Incident

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def days_ago(days: float):
    return NOW - timedelta(days=days)


def room(
    name: str,
    *,
    status: str = "finished",
    finished_days_ago: float | None = None,
    created_days_ago: float = 0,
):
    r = Room.objects.create(
        name=name,
        status=status,
        finished_at=days_ago(finished_days_ago) if finished_days_ago is not None else None,
    )
    Room.objects.filter(pk=r.pk).update(created_at=days_ago(created_days_ago))  # auto_now_add
    return r


def dispatch(in_room: Room, *, status: str = "agent_joined", ended_days_ago: float | None = None) -> Dispatch:
    d = Dispatch.objects.create(
        room=in_room,
        agent_name="support-agent",
        source="api",
        status=status,
        ended_at=days_ago(ended_days_ago) if ended_days_ago is not None else None,
    )
    DispatchEvent.objects.create(dispatch=d, at=d.created_at, status="pending")
    DispatchEvent.objects.create(dispatch=d, at=d.created_at, previous_status="pending", status=status)
    return d


def webhook_event(event_id: str, *, days: float, applied: bool = True) -> WebhookEvent:
    """A webhook event received `days` ago, applied to the ledger then unless `applied` is False."""
    e = WebhookEvent.objects.create(event_id=event_id, event="room_started", room_name="r")
    WebhookEvent.objects.filter(pk=e.pk).update(
        received_at=days_ago(days), applied_at=days_ago(days) if applied else None
    )
    return e


def fact(*, days: float, applied: bool) -> TokenFact:
    return TokenFact.objects.create(
        minted_at=days_ago(days),
        room_name="r",
        participant_identity="ann",
        agents=[{"agent_name": "a", "delivery": "token"}],
        applied_at=days_ago(days) if applied else None,
    )


def canary_run(*, days: float, status: str) -> CanaryRun:
    return CanaryRun.objects.create(
        agent_name="a", room_name="dp-canary-a-1", status=status, started_at=days_ago(days)
    )


def delivery(*, days: float, status: str) -> AlertDelivery:
    target = AlertTarget.objects.first() or AlertTarget.objects.create(
        name="ops", url="https://hooks.example.com/x"
    )
    incident = Incident.objects.first() or Incident.objects.create(
        key="livekit", kind="livekit_unreachable", opened_at=NOW, last_seen_at=NOW
    )
    return AlertDelivery.objects.create(
        target=target, incident=incident, event="opened", status=status, created_at=days_ago(days)
    )


def exists(obj) -> bool:
    return type(obj).objects.filter(pk=obj.pk).exists()


def test_rows_past_their_retention_go_newer_and_live_rows_stay(settings):
    settings.RETENTION_ROOMS_DAYS = 30
    settings.RETENTION_DISPATCHES_DAYS = 14
    settings.RETENTION_TOKEN_FACTS_DAYS = 7
    settings.RETENTION_WEBHOOK_EVENTS_DAYS = 2
    settings.RETENTION_CANARY_RUNS_DAYS = 30
    settings.RETENTION_ALERT_DELIVERIES_DAYS = 30

    old_room = room("old", finished_days_ago=31, created_days_ago=32)
    old_room_dispatch = dispatch(old_room, status="room_closed", ended_days_ago=31)
    recent_room = room("recent", finished_days_ago=29, created_days_ago=29)
    recent_room_dispatch = dispatch(recent_room, status="room_closed", ended_days_ago=13)
    # Live for two months: the room stays, so do its live dispatch and its recent attempt;
    # its attempt that ended 20 days ago goes (dispatch retention 14 days).
    long_lived = room("long-lived", status="active", created_days_ago=60)
    long_lived_live = dispatch(long_lived, status="agent_joined")
    long_lived_recent = dispatch(long_lived, status="failed", ended_days_ago=1)
    long_lived_old = dispatch(long_lived, status="failed", ended_days_ago=20)
    # Finished long ago yet with a live dispatch (the ledger disagrees with itself until the
    # next reconcile): neither goes.
    odd_room = room("odd", finished_days_ago=40, created_days_ago=41)
    odd_live = dispatch(odd_room, status="requested")

    old_event, new_event = webhook_event("EV_old", days=3), webhook_event("EV_new", days=1)
    unapplied_event = webhook_event("EV_unapplied", days=3, applied=False)  # its effects not in yet
    old_fact, new_fact = fact(days=8, applied=True), fact(days=6, applied=True)
    unapplied_fact = fact(days=30, applied=False)
    old_run, new_run = canary_run(days=31, status="success"), canary_run(days=29, status="failed")
    running = canary_run(days=40, status="running")
    old_delivery, new_delivery = delivery(days=31, status="sent"), delivery(days=1, status="failed")
    pending_delivery = delivery(days=31, status="pending")

    deleted = retention_apply(now=NOW)

    gone = [old_room, old_room_dispatch, long_lived_old, old_event, old_fact, old_run, old_delivery]
    kept = [
        recent_room,
        recent_room_dispatch,
        long_lived,
        long_lived_live,
        long_lived_recent,
        odd_room,
        odd_live,
        new_event,
        new_fact,
        unapplied_fact,
        unapplied_event,
        new_run,
        running,
        new_delivery,
        pending_delivery,
    ]
    assert [o for o in gone if exists(o)] == []
    assert [o for o in kept if not exists(o)] == []
    # A deleted dispatch takes its timeline with it; a kept one keeps it.
    assert not DispatchEvent.objects.filter(
        dispatch_id__in=[old_room_dispatch.pk, long_lived_old.pk]
    ).exists()
    assert DispatchEvent.objects.filter(dispatch=long_lived_live).count() == 2
    assert deleted == {
        "webhook_events": 1,
        "token_facts": 1,
        "dispatches": 2,  # the old room's (ended 31 days ago) and the long-lived room's old attempt
        "rooms": 1,
        "canary_runs": 1,
        "alert_deliveries": 1,
    }


def test_a_retention_of_zero_keeps_rows_forever(settings):
    settings.RETENTION_WEBHOOK_EVENTS_DAYS = 0
    ancient = webhook_event("EV_ancient", days=400)

    deleted = retention_apply(now=NOW)

    assert exists(ancient)
    assert "webhook_events" not in deleted


def test_deletion_runs_in_bounded_batches_and_never_takes_a_live_room(settings):
    settings.RETENTION_ROOMS_DAYS = 30
    old = [room(f"old-{i}", finished_days_ago=31 + i) for i in range(5)]
    for r in old:
        dispatch(r, status="room_closed", ended_days_ago=10)  # younger than the dispatch retention
    live = [room("live-active", status="active", created_days_ago=90), room("live-pending", status="pending")]
    live_dispatches = [dispatch(r) for r in live]

    with CaptureQueriesContext(connection) as queries:
        deleted = retention_apply(now=NOW, batch_size=2)

    assert Room.objects.filter(pk__in=[r.pk for r in old]).count() == 0
    assert Dispatch.objects.filter(room_id__in=[r.pk for r in old]).count() == 0
    assert all(exists(r) for r in live) and all(exists(d) for d in live_dispatches)
    assert deleted["rooms"] == 5
    room_deletes = [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith('DELETE FROM "rooms_app_room"')
    ]
    assert [len(re.search(r" IN \(([^)]*)\)", sql).group(1).split(",")) for sql in room_deletes] == [2, 2, 1]


def test_the_sweep_is_a_scheduled_celery_task(settings):
    from celery import current_app
    from django_celery_beat.models import PeriodicTask

    from dispatchportal import tasks

    task = PeriodicTask.objects.get(task="retention.apply")
    assert task.enabled and task.interval.every == settings.RETENTION_INTERVAL_S
    current_app.loader.import_default_modules()  # what a worker does at start
    assert "retention.apply" in current_app.tasks

    settings.RETENTION_WEBHOOK_EVENTS_DAYS = 2
    old = webhook_event("EV_old", days=3)
    assert tasks.retention_apply.apply().get() == {
        "webhook_events": 1,
        "token_facts": 0,
        "dispatches": 0,
        "rooms": 0,
        "canary_runs": 0,
        "alert_deliveries": 0,
    }
    assert not exists(old)


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_row_another_transaction_holds_is_skipped_without_waiting(settings):
    """The sweep never queues behind the token path or a webhook: a room row locked elsewhere
    is left for the next run, and the rest go at once."""
    settings.RETENTION_ROOMS_DAYS = 30
    held, free = room("held", finished_days_ago=31), room("free", finished_days_ago=31)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        from django.db import connection as thread_connection

        try:
            with transaction.atomic():
                Room.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(10)
        finally:
            thread_connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(5)
        started = time.monotonic()
        deleted = retention_apply(now=NOW)
        took = time.monotonic() - started
    finally:
        release.set()
        holder.join(10)

    assert took < 1.0
    assert deleted["rooms"] == 1
    assert exists(held) and not exists(free)
    assert retention_apply(now=NOW)["rooms"] == 1  # released: the next run takes it
    assert not exists(held)


def test_metrics_show_each_tables_rows_and_oldest_row_and_the_sweep_moves_them(
    client, settings, django_assert_max_num_queries
):
    from tests.metrics.test_metrics import sample

    settings.RETENTION_WEBHOOK_EVENTS_DAYS = 2
    oldest, newer = webhook_event("EV_1", days=3), webhook_event("EV_2", days=1)
    for i in range(3):
        room(f"r-{i}", status="active", created_days_ago=10 - i)

    # A count and one index lookup per table, and the PostgreSQL estimates; a bounded count
    # and one index lookup per backlog: cheap at any size.
    with django_assert_max_num_queries(19):
        text = client.get("/metrics").content.decode()

    assert sample(text, "dispatchportal_table_rows", table="webhook_events") == 2
    assert sample(text, "dispatchportal_table_rows", table="rooms") == 3
    assert sample(text, "dispatchportal_table_rows", table="canary_runs") == 0
    first = WebhookEvent.objects.get(pk=oldest.pk).received_at.timestamp()
    assert sample(text, "dispatchportal_table_oldest_row_timestamp_seconds", table="webhook_events") == first
    assert sample(text, "dispatchportal_table_oldest_row_timestamp_seconds", table="rooms") == pytest.approx(
        days_ago(10).timestamp()
    )
    assert 'dispatchportal_table_oldest_row_timestamp_seconds{table="canary_runs"}' not in text  # empty

    retention_apply(now=NOW)

    text = client.get("/metrics").content.decode()
    assert sample(text, "dispatchportal_table_rows", table="webhook_events") == 1
    after = WebhookEvent.objects.get(pk=newer.pk).received_at.timestamp()
    assert sample(text, "dispatchportal_table_oldest_row_timestamp_seconds", table="webhook_events") == after


def test_metrics_show_what_waits_to_be_applied_and_since_when(client):
    """The backlogs the Celery tasks work off: an operator sees the webhook events and token
    facts not applied yet, and how old the oldest is (a rising age: add dispatch processes)."""
    from rooms_app.services import webhook_events_apply
    from tests.metrics.test_metrics import sample

    webhook_event("EV_done", days=1)  # applied: not waiting
    waiting = webhook_event("EV_waits", days=0.5, applied=False)
    webhook_event("EV_waits_too", days=0.1, applied=False)
    fact(days=0.2, applied=False)

    text = client.get("/metrics").content.decode()
    assert sample(text, "dispatchportal_backlog_rows", backlog="webhook_events") == 2
    assert sample(text, "dispatchportal_backlog_rows", backlog="token_facts") == 1
    since = WebhookEvent.objects.get(pk=waiting.pk).received_at.timestamp()
    assert sample(text, "dispatchportal_backlog_oldest_timestamp_seconds", backlog="webhook_events") == since

    assert webhook_events_apply() == 2
    text = client.get("/metrics").content.decode()
    assert sample(text, "dispatchportal_backlog_rows", backlog="webhook_events") == 0
    assert 'dispatchportal_backlog_oldest_timestamp_seconds{backlog="webhook_events"}' not in text
    assert sample(text, "dispatchportal_backlog_rows", backlog="token_facts") == 1
