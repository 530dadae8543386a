"""Bounded growth: the tables that grow with traffic, how long their rows are kept, and the
batched deletion that keeps them to it.

Each table has a retention in days (`RETENTION_*_DAYS`; 0 keeps its rows forever), counted
from the time that ends a row's useful life: a room's finish, a dispatch's end, a token fact's
minting, a webhook's arrival, a canary run's start, an alert delivery's creation. Rows that
are still live are never deleted, whatever their age: a room that is not finished or has a live
dispatch, a live dispatch, a token fact not yet applied, a canary run still running, an alert
delivery still pending.

`retention_apply` (the periodic task `retention.apply`) deletes in batches of at most
`RETENTION_BATCH_SIZE` rows, one batch per table in turn, each in a short transaction of its
own that locks only the rows it deletes (`FOR UPDATE SKIP LOCKED`: a row another transaction
holds is left for the next run) and gives up after 2 s rather than wait longer on a lock
(`lock_timeout`, PostgreSQL). A run stops at its time budget; the next run goes on.

`table_stats` gives each table's row count and oldest row for `/metrics`, cheaply.

Models are named by label, not imported: this module serves the whole project, and the
dispatch path (which imports `dispatchportal.metrics`) never imports watch_app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.expressions import Combinable
from django.utils import timezone

logger = logging.getLogger(__name__)

LIVE_DISPATCH_STATUSES = ("pending", "requested", "job_assigned", "agent_joined")
# Every run ends well inside the task's soft time limit (60 s); what is left waits for the next.
TIME_BUDGET_S = 40.0
# A batch never waits on a row lock longer than this, nor runs longer than the statement limit.
LOCK_TIMEOUT_MS = 2000
STATEMENT_TIMEOUT_MS = 30000
# Above this many rows (PostgreSQL's estimate) /metrics gives the estimate instead of counting.
EXACT_COUNT_UP_TO = 100_000


def _room_has_live_dispatch() -> Exists:
    Dispatch = apps.get_model("rooms_app", "Dispatch")
    return Exists(Dispatch.objects.filter(room=OuterRef("pk"), status__in=LIVE_DISPATCH_STATUSES))


def _rooms_without_live_dispatch(ids: list[int]) -> list[int]:
    """Asked again once the rooms are locked: a dispatch created meanwhile keeps its room
    (none can be created for a locked room until the batch commits)."""
    Dispatch = apps.get_model("rooms_app", "Dispatch")
    live = set(
        Dispatch.objects.filter(room_id__in=ids, status__in=LIVE_DISPATCH_STATUSES).values_list(
            "room_id", flat=True
        )
    )
    return [pk for pk in ids if pk not in live]


@dataclass(frozen=True)
class Table:
    """A table that grows with traffic. `expires_by` is the time its retention counts from
    (None: counted on /metrics, deleted only with its parent row); `oldest_by` the field
    shown as its oldest row's time."""

    name: str
    model: str
    oldest_by: str
    setting: str = ""
    expires_by: str = ""
    deletable: Callable[[], Q | Exists | Combinable] = field(default=lambda: Q())  # Q & ~Exists: Combinable
    keep_live: Callable[[list[int]], list[int]] | None = None

    def model_class(self) -> type[models.Model]:
        return apps.get_model(self.model)

    def retention_days(self) -> float:
        return float(getattr(settings, self.setting, 0) or 0) if self.setting else 0.0


TABLES: tuple[Table, ...] = (
    Table(
        "webhook_events",
        "rooms_app.WebhookEvent",
        "received_at",
        "RETENTION_WEBHOOK_EVENTS_DAYS",
        "received_at",
        deletable=lambda: Q(applied_at__isnull=False),
    ),
    Table(
        "token_facts",
        "rooms_app.TokenFact",
        "minted_at",
        "RETENTION_TOKEN_FACTS_DAYS",
        "minted_at",
        deletable=lambda: Q(applied_at__isnull=False),
    ),
    Table(
        "dispatches",
        "rooms_app.Dispatch",
        "created_at",
        "RETENTION_DISPATCHES_DAYS",
        "ended_at",
        deletable=lambda: ~Q(status__in=LIVE_DISPATCH_STATUSES),
    ),
    Table("dispatch_events", "rooms_app.DispatchEvent", "at"),
    Table(
        "rooms",
        "rooms_app.Room",
        "created_at",
        "RETENTION_ROOMS_DAYS",
        "finished_at",
        deletable=lambda: Q(status="finished") & ~_room_has_live_dispatch(),
        keep_live=_rooms_without_live_dispatch,
    ),
    Table(
        "canary_runs",
        "watch_app.CanaryRun",
        "started_at",
        "RETENTION_CANARY_RUNS_DAYS",
        "started_at",
        deletable=lambda: ~Q(status="running"),
    ),
    Table(
        "alert_deliveries",
        "watch_app.AlertDelivery",
        "created_at",
        "RETENTION_ALERT_DELIVERIES_DAYS",
        "created_at",
        deletable=lambda: ~Q(status="pending"),
    ),
)


def _short_locks() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
            cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")


def rows_expired_delete(*, table: Table, cutoff: datetime, batch_size: int) -> tuple[int, int]:
    """Delete one batch of `table`'s rows past `cutoff` (at most `batch_size`, the oldest
    first, with what cascades from them) in one transaction: (rows picked, rows deleted)."""
    model = table.model_class()
    with transaction.atomic():
        _short_locks()
        expired = model._default_manager.filter(table.deletable(), **{f"{table.expires_by}__lt": cutoff})
        ids = list(
            expired.select_for_update(skip_locked=True)
            .order_by(table.expires_by)
            .values_list("pk", flat=True)[:batch_size]
        )
        picked = len(ids)
        if table.keep_live is not None and ids:
            ids = table.keep_live(ids)
        if ids:
            model._default_manager.filter(pk__in=ids).delete()
    return picked, len(ids)


def retention_apply(
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    time_budget_s: float = TIME_BUDGET_S,
    tables: tuple[Table, ...] = TABLES,
) -> dict[str, int]:
    """Delete every table's rows past their retention, one batch per table in turn, until
    none is left or the time budget is spent: {table: rows deleted} (with what cascaded from
    them: a room's dispatches and timelines are not counted apart)."""
    now = now or timezone.now()
    size = max(1, int(batch_size or settings.RETENTION_BATCH_SIZE))
    deadline = time.monotonic() + time_budget_s
    pending = {
        t.name: (t, now - timedelta(days=t.retention_days()))
        for t in tables
        if t.expires_by and t.retention_days() > 0
    }
    deleted = dict.fromkeys(pending, 0)
    while pending and time.monotonic() < deadline:
        for name, (table, cutoff) in list(pending.items()):
            try:
                picked, count = rows_expired_delete(table=table, cutoff=cutoff, batch_size=size)
            except DatabaseError as exc:  # a lock or statement timeout: the next run goes on
                logger.warning("retention: %s not trimmed this run: %s", name, exc)
                picked, count = 0, 0
            deleted[name] += count
            if picked < size:
                del pending[name]
    if any(deleted.values()):
        logger.info("retention: deleted %s", deleted)
    return deleted


# --- /metrics -------------------------------------------------------------------------------


def _estimates(tables: tuple[Table, ...]) -> dict[str, int]:
    """PostgreSQL's own row estimates (pg_class.reltuples: no scan); -1 when never analysed."""
    if connection.vendor != "postgresql":
        return {}
    names = {t.model_class()._meta.db_table: t.name for t in tables}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reltuples::bigint FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r'",
            [list(names)],
        )
        return {names[relname]: int(estimate) for relname, estimate in cursor.fetchall()}


def table_stats(*, tables: tuple[Table, ...] = TABLES) -> list[tuple[str, int, datetime | None]]:
    """(table, rows, the oldest row's time) for each table: exact counts up to
    EXACT_COUNT_UP_TO rows, PostgreSQL's estimate beyond (a count would scan the table); the
    oldest row is the one with the lowest id (one index lookup)."""
    estimates = _estimates(tables)
    stats: list[tuple[str, int, datetime | None]] = []
    for table in tables:
        manager: Any = table.model_class()._default_manager
        estimate = estimates.get(table.name, -1)
        rows = estimate if estimate > EXACT_COUNT_UP_TO else manager.count()
        oldest = manager.order_by("pk").values_list(table.oldest_by, flat=True).first()
        stats.append((table.name, rows, oldest))
    return stats


# What the Celery tasks apply off the request: recorded rows whose `applied_at` is empty.
BACKLOGS: tuple[tuple[str, str, str], ...] = (
    ("webhook_events", "rooms_app.WebhookEvent", "received_at"),
    ("token_facts", "rooms_app.TokenFact", "minted_at"),
)


def backlog_stats() -> list[tuple[str, int, datetime | None]]:
    """(backlog, rows recorded and not applied yet, the oldest one's time) for the webhook
    events and the token facts: both read through their partial index of pending rows, the
    count stopping at EXACT_COUNT_UP_TO."""
    stats: list[tuple[str, int, datetime | None]] = []
    for name, model, recorded_by in BACKLOGS:
        pending = apps.get_model(model)._default_manager.filter(applied_at__isnull=True)
        rows = pending.order_by()[:EXACT_COUNT_UP_TO].count()
        oldest = pending.order_by("pk").values_list(recorded_by, flat=True).first() if rows else None
        stats.append((name, rows, oldest))
    return stats


def table_stats_safe() -> tuple[
    list[tuple[str, int, datetime | None]], list[tuple[str, int, datetime | None]]
]:
    """(`table_stats`, `backlog_stats`), or nothing when the database cannot be read (the rest
    of /metrics still answers)."""
    try:
        return table_stats(), backlog_stats()
    except DatabaseError as exc:
        logger.warning("table sizes not read for /metrics: %s", exc)
        return [], []
