"""Facts: what happened, appended to the database and never lost because something else
arrived first. The ledger (`ledger`) takes them in, beside what webhooks, tasks and reconcile
report: a dispatch's status is not recomputed from facts alone.

- A token that carries agents is a `TokenFact`, written on the request path before the
  answer by `token_fact_intake` (one INSERT, which also reads whether the room is live).
  `token_facts_apply` turns unapplied facts into ledger rows: a task that the first token of
  each `APPLY_WINDOW_S` schedules for the window's end, every participant_joined webhook for its room (so the
  ledger knows the token before it judges who joined), and every reconcile pass
  (the sweep that catches up after a broker outage). Each fact is applied in its own
  savepoint: a record that cannot be applied is marked with its error and skipped.
- `AgentSeen`: agent names workers really register with, from every place they show (one row
  per name, updated with the latest sighting).
- `WorkerHeartbeat`: the Celery worker's sign of life, read by the doctor (one row per worker,
  updated every beat).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from agents_app.models import Agent
from dispatchportal.redis import redis_available
from livekit_boundary.client import LkDispatch, LkParticipant

from ..models import AgentSeen, Dispatch, Room, TokenFact, WorkerHeartbeat
from .jobs import token_facts_apply_enqueue
from .ledger import dispatch_create, dispatch_note, room_get_or_create

logger = logging.getLogger(__name__)

APPLY_WINDOW_S = 0.5
APPLY_BATCH = 200
HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_FRESH = timedelta(seconds=20)
# A database that is down or failing over: the facts stay unapplied and are tried again.
_TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)


# --- token facts ------------------------------------------------------------------------------


def token_fact_intake(
    *, room_name: str, participant_identity: str, agents: Sequence[Any], client: str
) -> bool:
    """The token path's one call into the ledger: record a token's agents before its answer
    and make sure they are applied within about `APPLY_WINDOW_S`. Returns whether the ledger
    knows the room is live (then LiveKit would ignore the token's agents, so the fact records
    them, and the caller mints them, as explicit dispatches)."""
    for attempt in (1, 2):
        try:
            live = _token_fact_insert(
                room_name=room_name, participant_identity=participant_identity, agents=agents, client=client
            )
            break
        except OperationalError:
            # A connection the database dropped since its last use (a restart, a failover):
            # connections are not checked before each request (settings.py), so the first
            # use finds out. Once more, on a new connection.
            if attempt == 2 or connection.in_atomic_block:
                raise
            connection.close()
    _token_facts_apply_soon()
    return live


def _token_fact_insert(
    *, room_name: str, participant_identity: str, agents: Sequence[Any], client: str
) -> bool:
    """One statement: INSERT the fact, choosing its agents' delivery by whether the room is
    live in the ledger, and return that."""
    as_token = [_agent_json(a, a.delivery) for a in agents]
    as_explicit = [_agent_json(a, "explicit") for a in agents]
    field = TokenFact._meta.get_field("agents")
    params = [
        timezone.now(),
        room_name,
        participant_identity,
        client,
        field.get_db_prep_save(as_explicit, connection),
        field.get_db_prep_save(as_token, connection),
        room_name,
        Room.Status.ACTIVE,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_token_fact_sql(connection.vendor), params)
        (live,) = cursor.fetchone()
    return bool(live)


@functools.cache
def _token_fact_sql(vendor: str) -> str:
    """The token fact's INSERT, built once per database vendor (the token path sends it on
    every request)."""
    quote = connection.ops.quote_name
    return (
        f"INSERT INTO {quote(TokenFact._meta.db_table)} "
        "(minted_at, room_name, participant_identity, client, agents, room_live, apply_error) "
        "SELECT %s, %s, %s, %s, CASE WHEN live.v THEN %s ELSE %s END, live.v, '' FROM "
        f"(SELECT EXISTS(SELECT 1 FROM {quote(Room._meta.db_table)} WHERE name = %s AND status = %s) AS v) live "
        "RETURNING room_live"
    )


def _agent_json(agent: Any, delivery: str) -> dict[str, str]:
    return {
        "agent_name": agent.agent_name,
        "rule": agent.rule,
        "metadata": agent.metadata,
        "delivery": delivery,
    }


class _Window:
    """True at most once per `seconds` in this process (monotonic clock)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.next_open = 0.0

    def open(self) -> bool:
        now = time.monotonic()
        if now < self.next_open:
            return False
        self.next_open = now + self.seconds
        return True


_apply_window = _Window(APPLY_WINDOW_S)


def _token_facts_apply_soon() -> None:
    """The first token of each `APPLY_WINDOW_S` in this process publishes an application task
    for the window's end; it applies every fact recorded before it runs, so the tokens that
    follow in the window are covered. Several processes publish one each per window (the
    application is idempotent: a fact is applied by one run). Skipped while Redis is known to
    be down (the broker is down with it): reconcile's sweep applies the facts once it is back."""
    if redis_available() and _apply_window.open():
        token_facts_apply_enqueue(countdown=APPLY_WINDOW_S)


def token_facts_apply(*, room_name: str | None = None) -> int:
    """Apply every token fact not yet in the ledger (of one room, or all), oldest first.
    Returns how many were applied. A fact that fails is marked and skipped; a database
    outage stops the run and leaves the rest for the next."""
    applied = 0
    last_id = 0
    while True:
        query = TokenFact.objects.filter(applied_at__isnull=True, id__gt=last_id).order_by("id")
        if room_name is not None:
            query = query.filter(room_name=room_name)
        batch = list(query[:APPLY_BATCH])
        for fact in batch:
            applied += _token_fact_apply_safely(fact)
        if len(batch) < APPLY_BATCH:
            return applied
        last_id = batch[-1].pk


def _token_fact_apply_safely(fact: TokenFact) -> int:
    try:
        with transaction.atomic():
            # Compare-and-set: of two runs racing for a fact, one applies it.
            if not TokenFact.objects.filter(pk=fact.pk, applied_at__isnull=True).update(
                applied_at=timezone.now()
            ):
                return 0
            token_fact_apply(fact=fact)
        return 1
    except _TRANSIENT_DB_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001  one bad record must never hold up the others
        logger.exception(
            "token fact %s could not be applied; skipped", fact.pk, extra={"room": fact.room_name}
        )
        error = f"{type(exc).__name__}: {exc}"[:500]
        try:
            TokenFact.objects.filter(pk=fact.pk, applied_at__isnull=True).update(
                applied_at=timezone.now(), apply_error=error
            )
        except DatabaseError:  # even the mark failed (the record's room name, say): keep going
            logger.exception("token fact %s could not be marked", fact.pk)
        return 0


def token_fact_apply(*, fact: TokenFact) -> list[Dispatch]:
    """A token fact's effect on the ledger: token-delivered agents as `pending` (LiveKit
    dispatches them when the join creates the room), explicit ones dispatched now. An agent
    already live in the room keeps its dispatch; the token is noted on its timeline."""
    minted = fact.minted_at
    room = room_get_or_create(name=fact.room_name)
    updates: dict[str, Any] = {"last_token_at": minted, "tokens_minted": F("tokens_minted") + 1}
    if room.first_token_at is None or room.first_token_at > minted:
        updates["first_token_at"] = minted
        updates["existed_before_token"] = bool(
            fact.room_live
            or (
                room.status == Room.Status.ACTIVE and room.started_at is not None and room.started_at < minted
            )
        )
    Room.objects.filter(pk=room.pk).update(**updates)
    room.refresh_from_db()
    wanted = [dict(item) for item in fact.agents]
    by_name = {
        a.agent_name: a for a in Agent.objects.filter(agent_name__in=[w["agent_name"] for w in wanted])
    }
    recorded = []
    for item in wanted:
        agent = by_name.get(item["agent_name"])
        if agent is None:
            logger.warning("token named unknown agent %r", item["agent_name"], extra={"room": fact.room_name})
            continue
        cancelled = (
            Dispatch.objects.filter(
                room=room, agent_name=agent.agent_name, status=Dispatch.Status.CANCELLED, ended_at__gte=minted
            )
            .order_by("-id")
            .first()
        )
        if cancelled is not None:
            # A cancel is final: a token minted before it (applied late) does not bring it back.
            dispatch_note(
                dispatch=cancelled,
                detail=f"token minted for '{fact.participant_identity}' before this cancel also carried "
                f"'{agent.agent_name}'; not dispatched again",
            )
            continue
        dispatch, created = dispatch_create(
            room=room,
            agent=agent,
            source=Dispatch.Source.TOKEN,
            delivery=item["delivery"],
            metadata=item["metadata"],
            rule_name=item["rule"],
            requested_by=fact.client,
            identity_trigger=fact.participant_identity,
        )
        if not created:
            dispatch_note(
                dispatch=dispatch,
                detail=f"token minted for '{fact.participant_identity}' by {fact.client or 'staff'} also "
                f"carried '{agent.agent_name}' ({item['delivery']} delivery); this dispatch stands",
            )
        recorded.append(dispatch)
    return recorded


# --- agent names seen -------------------------------------------------------------------------


def agents_seen_record(*, seen: Iterable[tuple[str, str, str]]) -> None:
    """(agent name, room, how) triples: upsert each name's last sighting. Names only; the
    unnamed worker ("") is recorded too, the doctor explains what it can and cannot do."""
    now = timezone.now()
    latest: dict[str, tuple[str, str]] = {}
    for name, room, how in seen:
        if name is not None and len(name) <= 128:
            latest[name] = (room[:256], how[:64])
    for name, (room, how) in latest.items():
        if not AgentSeen.objects.filter(agent_name=name).update(room_name=room, how=how, last_seen_at=now):
            AgentSeen.objects.get_or_create(
                agent_name=name, defaults={"room_name": room, "how": how, "last_seen_at": now}
            )


WORKER_NAME_ATTRIBUTE = "lk.agent.name"  # set by the worker itself (the server sets lk.agent_name)


def agent_sightings(
    *,
    room_name: str,
    how: str,
    participants: Iterable[LkParticipant] = (),
    dispatches: Iterable[LkDispatch] = (),
) -> list[tuple[str, str, str]]:
    """The agent names LiveKit shows in a room, as (name, room, how): agent participants
    (the server's `lk.agent_name` and the worker's own `lk.agent.name`), and dispatches a
    worker took a job of (a job exists only if a worker registered as exactly that name)."""
    seen: list[tuple[str, str, str]] = []
    for p in participants:
        if p.is_agent:
            seen.append((p.agent_name or "", room_name, f"agent joined ({how})"))
            own = p.attributes.get(WORKER_NAME_ATTRIBUTE)
            if own is not None and own != p.agent_name:
                seen.append((own, room_name, f"worker identity attribute ({how})"))
    seen += [(d.agent_name, room_name, f"job in ListDispatch ({how})") for d in dispatches if d.jobs]
    return seen


def agents_seen_in(
    *,
    room_name: str,
    how: str,
    participants: Iterable[LkParticipant] = (),
    dispatches: Iterable[LkDispatch] = (),
) -> None:
    seen = agent_sightings(room_name=room_name, how=how, participants=participants, dispatches=dispatches)
    if seen:
        agents_seen_record(seen=seen)


# --- the worker's heartbeat -------------------------------------------------------------------


def worker_heartbeat(*, hostname: str, started_at: datetime) -> None:
    now = timezone.now()
    if not WorkerHeartbeat.objects.filter(hostname=hostname).update(beat_at=now, started_at=started_at):
        WorkerHeartbeat.objects.get_or_create(
            hostname=hostname, defaults={"started_at": started_at, "beat_at": now}
        )
