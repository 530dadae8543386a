"""Facts: what happened, appended to the database and never lost because something else
arrived first. The ledger (`ledger`) takes them in, beside what webhooks, tasks and reconcile
report: a dispatch's status is not recomputed from facts alone.

- A token that carries agents is a `TokenFact`, written on the request path before the
  answer by `token_fact_intake` (one INSERT, which also reads whether the room is live).
  `token_facts_apply` turns unapplied facts into ledger rows: a task that the first token of
  each `APPLY_WINDOW_S` schedules for the window's end, every participant_joined webhook for its room (so the
  ledger knows the token before it judges who joined), and every reconcile pass
  (the sweep that catches up after a broker outage). Facts are applied in batches, a few
  set-based statements per batch (`_facts_apply`; one fact alone is a batch of one): a record
  that cannot be applied is marked with its error and skipped, and a batch the database
  refuses is applied again fact by fact, so one bad record never holds up the others.
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from agents_app.models import Agent
from dispatchportal.redis import redis_available
from livekit_boundary.client import LkDispatch, LkParticipant

from ..models import LIVE_STATUSES, AgentSeen, Dispatch, Room, TokenFact, WorkerHeartbeat
from .jobs import token_facts_apply_enqueue
from .ledger import default_metadata, dispatches_record

logger = logging.getLogger(__name__)

APPLY_WINDOW_S = 0.5
APPLY_BATCH = 500
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
    """Apply every token fact not yet in the ledger (of one room, or all), oldest first, in
    batches of `APPLY_BATCH` (one transaction each). Returns how many were applied. A fact
    that fails is marked with its error and skipped; a database outage stops the run and
    leaves the rest for the next.

    The sweep (all rooms) takes facts no other run holds (SKIP LOCKED), so two workers never
    apply one fact; a fact whose room another transaction holds, or whose room has an older
    fact another run is applying, is left for a run scheduled here (a room's facts are applied
    in order). One room's facts (the webhook path) wait for a run applying them, so the
    ledger has them when this returns."""
    applied = 0
    deferred = 0
    after = 0
    while True:
        # No savepoint of its own inside the caller's transaction (the webhook path calls this
        # for every join): each batch below has one.
        with transaction.atomic(savepoint=False):
            query = TokenFact.objects.filter(applied_at__isnull=True, id__gt=after).order_by("id")
            if room_name is not None:
                query = query.filter(room_name=room_name).select_for_update()
            else:
                query = query.select_for_update(skip_locked=True)
            batch = list(query[:APPLY_BATCH])
            if batch:
                done, left = _facts_apply_safely(batch, wait=room_name is not None)
                applied += done
                deferred += left
        if len(batch) < APPLY_BATCH:
            break
        after = batch[-1].pk
    if deferred and redis_available():
        token_facts_apply_enqueue(countdown=APPLY_WINDOW_S)
    return applied


def token_fact_apply(*, fact: TokenFact) -> list[Dispatch]:
    """One fact's effect on the ledger, as a batch of one (the caller marks it applied):
    the dispatches it recorded or found standing. Raises if the record cannot be applied."""
    with transaction.atomic():
        outcome = _facts_apply([fact], wait=True)
    if fact.pk in outcome.errors:
        raise ValueError(outcome.errors[fact.pk])
    return outcome.recorded[fact.pk]


def _facts_apply_safely(facts: list[TokenFact], *, wait: bool) -> tuple[int, int]:
    """Apply `facts` (locked by the caller) as one batch and mark them; if the batch fails,
    each fact alone, so one bad record never holds up the others. (applied, deferred)."""
    try:
        with transaction.atomic():
            outcome = _facts_apply(facts, wait=wait)
            now = timezone.now()
            TokenFact.objects.filter(pk__in=outcome.applied).update(applied_at=now)
            for pk, error in outcome.errors.items():
                TokenFact.objects.filter(pk=pk).update(applied_at=now, apply_error=error[:500])
        return len(outcome.applied), len(outcome.deferred)
    except _TRANSIENT_DB_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001  one bad record must never hold up the others
        if len(facts) > 1:
            logger.warning("a batch of %d token facts failed (%s); applying them one by one", len(facts), exc)
            applied = deferred = 0
            for fact in facts:
                done, left = _facts_apply_safely([fact], wait=wait)
                applied, deferred = applied + done, deferred + left
            return applied, deferred
        [fact] = facts
        logger.exception(
            "token fact %s could not be applied; skipped", fact.pk, extra={"room": fact.room_name}
        )
        error = f"{type(exc).__name__}: {exc}"[:500]
        try:
            with transaction.atomic():
                TokenFact.objects.filter(pk=fact.pk).update(applied_at=timezone.now(), apply_error=error)
        except DatabaseError:  # even the mark failed (the record's room name, say): keep going
            logger.exception("token fact %s could not be marked", fact.pk)
        return 0, 0


@dataclass
class _Outcome:
    """What a batch did: facts applied (with the dispatches each recorded or found standing),
    facts that cannot be applied (with why), facts left for a later run."""

    applied: list[int] = field(default_factory=list)
    recorded: dict[int, list[Dispatch]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    deferred: list[int] = field(default_factory=list)


def _fact_items(fact: TokenFact, agents: dict[str, Agent]) -> list[tuple[Agent | None, dict[str, Any]]]:
    """The fact's agents, read before anything is written (a malformed record raises here)."""
    items = []
    for raw in fact.agents:
        item = dict(raw)
        agent = agents.get(item["agent_name"])
        if agent is not None:
            item = {key: item[key] for key in ("agent_name", "delivery", "metadata", "rule")}
        items.append((agent, item))
    return items


def _facts_apply(facts: Sequence[TokenFact], *, wait: bool) -> _Outcome:
    """The effect of `facts` (oldest first, locked by the caller) on the ledger, in a few
    statements whatever their number. Per fact, as if applied alone in that order: its room is
    recorded (pending until LiveKit reports it) with the token counted; each agent it carries
    gets a `pending` dispatch (token-delivered: LiveKit dispatches it when the join creates the
    room, with its deadline armed if the room is live already; explicit: sent to LiveKit after
    commit), unless the agent already has a live dispatch in the room (the token is noted on
    that one's timeline) or a cancel after the token (final: noted, not dispatched again).
    `wait`: wait for rooms another transaction holds instead of leaving their facts."""
    outcome = _Outcome()
    names: set[str] = set()
    for fact in facts:
        try:
            names.update(dict(item)["agent_name"] for item in fact.agents)
        except Exception:  # noqa: BLE001, S112  reported by `_fact_items` below
            continue
    agents = {a.agent_name: a for a in Agent.objects.filter(agent_name__in=names)}
    parsed: list[tuple[TokenFact, list[tuple[Agent | None, dict[str, Any]]]]] = []
    for fact in facts:
        try:
            parsed.append((fact, _fact_items(fact, agents)))
        except Exception as exc:  # noqa: BLE001  a record the token path never writes
            logger.error("token fact %s cannot be applied: %r", fact.pk, exc, extra={"room": fact.room_name})
            outcome.errors[fact.pk] = f"{type(exc).__name__}: {exc}"
    rooms = _rooms_lock(names={fact.room_name for fact, _ in parsed}, wait=wait)
    if not wait:
        rooms = _rooms_in_order(rooms=rooms, facts=[fact for fact, _ in parsed])
    ready = [(fact, items) for fact, items in parsed if fact.room_name in rooms]
    outcome.deferred = [fact.pk for fact, _ in parsed if fact.room_name not in rooms]
    for attempt in (1, 2, 3):
        try:
            with transaction.atomic():
                outcome.recorded = _facts_write(facts=ready, rooms=rooms)
            break
        except IntegrityError:
            # A trigger recorded one of these agents in its room meanwhile: read again.
            if attempt == 3:
                raise
            for room in rooms.values():
                room.refresh_from_db()
    outcome.applied = [fact.pk for fact, _ in ready]
    return outcome


def _rooms_lock(*, names: set[str], wait: bool) -> dict[str, Room]:
    """The rooms named, created pending where the ledger has none, locked for this
    transaction; without `wait`, rooms another transaction holds are left out."""
    rooms = _rooms_locked(names=names, wait=wait)
    missing = names - rooms.keys()
    if missing:
        Room.objects.bulk_create([Room(name=name) for name in sorted(missing)], ignore_conflicts=True)
        rooms.update(_rooms_locked(names=missing, wait=wait))
    return rooms


def _rooms_locked(*, names: set[str], wait: bool) -> dict[str, Room]:
    query = Room.objects.filter(name__in=names).order_by("pk")
    query = query.select_for_update() if wait else query.select_for_update(skip_locked=True)
    return {room.name: room for room in query}


def _rooms_in_order(*, rooms: dict[str, Room], facts: Sequence[TokenFact]) -> dict[str, Room]:
    """Leave out rooms with an older fact not in this batch (another run holds it): a room's
    facts are applied in the order they were recorded."""
    ids = [fact.pk for fact in facts if fact.room_name in rooms]
    if not ids:
        return rooms
    behind = set(
        TokenFact.objects.filter(applied_at__isnull=True, room_name__in=list(rooms), id__lt=max(ids))
        .exclude(id__in=ids)
        .values_list("room_name", flat=True)
    )
    return {name: room for name, room in rooms.items() if name not in behind}


_COUNTED = ("first_token_at", "existed_before_token", "last_token_at", "tokens_minted")


def _rooms_count_tokens(rooms: list[Room]) -> None:
    """Write the rooms' token fields (one UPDATE; on PostgreSQL from arrays, since Django's
    `bulk_update` spends milliseconds per row building its CASE expressions)."""
    if connection.vendor != "postgresql":
        Room.objects.bulk_update(rooms, _COUNTED)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _rooms_count_sql(), [[r.pk for r in rooms], *([getattr(r, f) for r in rooms] for f in _COUNTED)]
        )


@functools.cache
def _rooms_count_sql() -> str:
    table = connection.ops.quote_name(Room._meta.db_table)
    return (
        f"UPDATE {table} AS r SET first_token_at = v.f, existed_before_token = v.e, last_token_at = v.l, "
        "tokens_minted = v.n FROM unnest(%s::bigint[], %s::timestamptz[], %s::boolean[], %s::timestamptz[], "
        "%s::integer[]) AS v(id, f, e, l, n) WHERE r.id = v.id"
    )


def _facts_write(
    *, facts: Sequence[tuple[TokenFact, list[tuple[Agent | None, dict[str, Any]]]]], rooms: dict[str, Room]
) -> dict[int, list[Dispatch]]:
    room_ids = [room.pk for room in rooms.values()]
    names = {item["agent_name"] for _, items in facts for agent, item in items if agent is not None}
    live: dict[tuple[int, str], Dispatch] = {
        (d.room_id, d.agent_name): d
        for d in Dispatch.objects.filter(room_id__in=room_ids, agent_name__in=names, status__in=LIVE_STATUSES)
    }
    cancelled: dict[tuple[int, str], list[Dispatch]] = {}
    if facts:
        earliest = min(fact.minted_at for fact, _ in facts)
        for d in Dispatch.objects.filter(
            room_id__in=room_ids,
            agent_name__in=names,
            status=Dispatch.Status.CANCELLED,
            ended_at__gte=earliest,
        ).order_by("-id"):
            cancelled.setdefault((d.room_id, d.agent_name), []).append(d)
    new: list[Dispatch] = []
    notes: list[tuple[Dispatch, str]] = []
    recorded: dict[int, list[Dispatch]] = {}
    counted: dict[int, Room] = {}
    for fact, items in facts:
        room = rooms[fact.room_name]
        minted = fact.minted_at
        if room.first_token_at is None or room.first_token_at > minted:
            room.first_token_at = minted
            room.existed_before_token = bool(
                fact.room_live
                or (
                    room.status == Room.Status.ACTIVE
                    and room.started_at is not None
                    and room.started_at < minted
                )
            )
        room.last_token_at = minted
        room.tokens_minted += 1
        counted[room.pk] = room
        recorded[fact.pk] = []
        for agent, item in items:
            if agent is None:
                logger.warning(
                    "token named unknown agent %r", item["agent_name"], extra={"room": fact.room_name}
                )
                continue
            key = (room.pk, agent.agent_name)
            cancel = next((d for d in cancelled.get(key, ()) if d.ended_at and d.ended_at >= minted), None)
            if cancel is not None:
                # A cancel is final: a token minted before it (applied late) does not bring it back.
                notes.append(
                    (
                        cancel,
                        f"token minted for '{fact.participant_identity}' before this cancel also carried "
                        f"'{agent.agent_name}'; not dispatched again",
                    )
                )
                continue
            dispatch = live.get(key)
            if dispatch is None:
                dispatch = Dispatch(
                    room=room,
                    agent=agent,
                    agent_name=agent.agent_name,
                    source=Dispatch.Source.TOKEN,
                    delivery=item["delivery"],
                    metadata=default_metadata(agent) if item["metadata"] is None else item["metadata"],
                    rule_name=item["rule"],
                    requested_by=fact.client,
                    participant_identity_trigger=fact.participant_identity,
                )
                live[key] = dispatch
                new.append(dispatch)
            else:
                notes.append(
                    (
                        dispatch,
                        f"token minted for '{fact.participant_identity}' by {fact.client or 'staff'} also "
                        f"carried '{agent.agent_name}' ({item['delivery']} delivery); this dispatch stands",
                    )
                )
            recorded[fact.pk].append(dispatch)
    _rooms_count_tokens(list(counted.values()))
    dispatches_record(dispatches=new, notes=notes)
    return recorded


# --- agent names seen -------------------------------------------------------------------------


def agents_seen_record(*, seen: Iterable[tuple[str, str, str]]) -> None:
    """(agent name, room, how) triples: upsert each name's last sighting, in name order (so two
    transactions recording the same names never wait on each other in a cycle). Names only;
    the unnamed worker ("") is recorded too, the doctor explains what it can and cannot do."""
    now = timezone.now()
    latest: dict[str, tuple[str, str]] = {}
    for name, room, how in seen:
        if name is not None and len(name) <= 128:
            latest[name] = (room[:256], how[:64])
    for name, (room, how) in sorted(latest.items()):
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
