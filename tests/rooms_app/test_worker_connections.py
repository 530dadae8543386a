"""A real Celery worker keeps its database connections from one task to the next. Celery's
Django fixup would close them after every task, and each task would open its own: on the
lifecycle bench a quarter of a webhook's application went to connecting."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from rooms_app import tasks
from rooms_app.models import WebhookEvent
from rooms_app.services.webhook_events import webhook_shard

from .conftest import eventually

pytestmark = [pytest.mark.needs_postgres, pytest.mark.django_db(transaction=True)]
TASKS = 12
# The session's worker runs a pool of 4 threads, each with its own connection, and its
# heartbeat one more: the most sessions it may open over the tasks below, however it shares
# them out.
WORKER_CONNECTIONS = 5


def _sessions_opened() -> int:
    """Sessions ever opened on the test database (PostgreSQL counts one as it starts and
    publishes the count when the session commits or ends)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def _applied_by_the_worker(room: str) -> None:
    """One task on the worker: a room_finished event for a room the ledger never had, recorded
    and applied (its application reads and writes the database and changes nothing else)."""
    event = WebhookEvent.objects.create(
        event_id=f"EV_{uuid.uuid4().hex[:12]}",
        event="room_finished",
        room_name=room,
        shard=webhook_shard(room),
        payload={"event": "room_finished", "room": {"name": room, "sid": "RM_gone"}},
    )
    tasks.webhook_events_apply.delay(shard=event.shard)
    eventually(
        lambda: WebhookEvent.objects.filter(pk=event.pk, applied_at__isnull=False).exists(),
        timeout=20,
        what=f"the worker applied {room}'s event",
    )


def test_the_worker_opens_no_connection_per_task(worker):
    _applied_by_the_worker("conn-warm")  # the worker has a connection now, whoever it was
    before = _sessions_opened()
    for n in range(TASKS):
        _applied_by_the_worker(f"conn-{n}")
    opened = _sessions_opened() - before
    assert opened <= WORKER_CONNECTIONS, f"{opened} sessions opened for {TASKS} tasks"
