"""The reconcile pass: make the ledger agree with LiveKit, and LiveKit with the rules.

Webhooks can be lost, workers die, self-hosted LiveKit never re-dispatches: this pass is the
safety net. Periodic (django-celery-beat, default every 30 s), `manage.py reconcile`, and the
admin's "reconcile now". One pass:

1. asks LiveKit for its rooms: one ListRooms (LiveKit has no paging), with its own deadline
   (`RECONCILE_LIST_ROOMS_TIMEOUT_S`); a pass whose ListRooms fails or times out changes
   nothing and reports the error (the task's result: metrics and the `reconcile` alert);
2. then goes through the rooms a chunk at a time (`RECONCILE_CHUNK_ROOMS`): the rooms the
   ledger holds live, read in pages by key; then the rooms LiveKit has that the ledger does
   not hold live; then finished rooms whose dispatches are still live. Per chunk it reads the
   ledger in a fixed number of queries, asks for the participants of every room where the
   portal wants an agent (ListParticipants, concurrently, bounded by a semaphore), and in one
   transaction: records new and restarted rooms (`services.rooms_observe`), closes rows of
   rooms that are gone (`services.rooms_close`, each dispatch through the transition
   function), marks agents joined or left, re-dispatches agents that left a live room,
   applies explicit-delivery rules to rooms that lack their agents (rooms made by other apps,
   SIP, the token path on an existing room), records managed agents it finds unrecorded, and
   removes a second agent of one name or a cancelled dispatch's agent (the shared matcher,
   `services.matching`); after that commit it enqueues the LiveKit work: CreateDispatch for
   new rows, join-deadline checks whose task was lost, dispatches stuck in `pending`.

What a pass holds is LiveKit's room list (a few hundred bytes a room) and one chunk's rows
and participants. Every decision is about one room, so chunking changes no outcome; a pass
that fails half-way leaves the chunks it finished written, and the next pass does the rest.

The implicit agent_name="" dispatch and agents the portal does not manage are ignored. Only
one pass runs at a time: a Redis lock with REDIS_URL, else a file lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents_app.models import Agent
from agents_app.rules import Join
from agents_app.selectors import config_get
from dispatchportal import metrics
from dispatchportal.locks import lock_try
from dispatchportal.reserved import is_canary_room
from livekit_boundary.client import LiveKit, LiveKitError, LkParticipant, LkRoom, livekit_run

from . import services
from .models import LIVE_STATUSES, WAITING_STATUSES, Dispatch, Room
from .services.jobs import dispatch_deadline_enqueue, dispatch_request_enqueue
from .services.matching import Verdict, participant_match

logger = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 300
# A pending explicit dispatch untouched this long has lost its task (broker restart, the
# filesystem broker without acks): send it again. Longer than the longest retry backoff.
STALE_PENDING_S = 90
# An overdue join deadline this late has lost its check task.
OVERDUE_GRACE_S = 5
# A token minted for a room that never started is forgotten after the longest token TTL.
PENDING_ROOM_EXPIRY_S = 6 * 3600
NAME_CHUNK = 5000
# The ledger's columns the pass reads of each room.
ROOM_FIELDS = ("id", "name", "sid", "status", "num_participants", "started_at", "created_at")


@dataclass(slots=True)
class ReconcileReport:
    rooms_in_livekit: int = 0
    rooms_checked: int = 0
    rooms_recorded: int = 0
    rooms_closed: int = 0
    agents_joined: int = 0
    agents_left: int = 0
    agents_adopted: int = 0
    dispatched: int = 0
    redispatched: int = 0
    gave_up: int = 0
    deadline_checks: int = 0
    requeued: int = 0
    agents_removed: int = 0
    tokens_expired: int = 0
    token_facts_applied: int = 0
    webhook_events_applied: int = 0
    livekit_errors: int = 0
    skipped: bool = False
    error: str = ""
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def repaired(self) -> int:
        """Drift this pass repaired (for metrics and admin messages)."""
        return (
            self.rooms_recorded
            + self.rooms_closed
            + self.agents_joined
            + self.agents_left
            + self.agents_adopted
            + self.dispatched
            + self.requeued
            + self.agents_removed
            + self.tokens_expired
            + self.token_facts_applied
        )


def reconcile_lock() -> contextlib.AbstractContextManager[bool]:
    """One pass at a time across processes: yields whether this caller holds the lock."""
    return lock_try("rooms:reconcile-lock", timeout_s=LOCK_TIMEOUT_S)


def reconcile_run(*, room_names: Sequence[str] | None = None) -> ReconcileReport:
    """One pass over every room (or only `room_names`). A pass already running elsewhere
    makes this one a no-op (`skipped`)."""
    started = time.monotonic()
    report = ReconcileReport()
    with reconcile_lock() as acquired:
        if not acquired:
            report.skipped = True
            return report
        try:
            # Webhook events and token facts not applied yet (the broker was down, say)
            # first: the pass then sees what they did.
            report.webhook_events_applied = services.webhook_events_apply()
            if room_names is None:
                report.token_facts_applied = services.token_facts_apply()
            else:
                report.token_facts_applied = sum(services.token_facts_apply(room_name=n) for n in room_names)
            ReconcilePass(report, list(room_names) if room_names is not None else None).run()
        except LiveKitError as exc:
            report.error = exc.message
            logger.warning("reconcile: LiveKit unavailable: %s", exc.message)
    report.duration_s = round(time.monotonic() - started, 3)
    metrics.reconcile_report_record(report=report)
    logger.info("reconcile pass done", extra={k: v for k, v in report.as_dict().items() if k != "notes"})
    return report


class ReconcilePass:
    """One pass, a chunk of rooms at a time (`RECONCILE_CHUNK_ROOMS`): what the pass holds
    besides LiveKit's room list is bounded by the chunk, whatever the number of rooms."""

    def __init__(self, report: ReconcileReport, scope: list[str] | None) -> None:
        self.report = report
        self.scope = scope
        self.now = timezone.now()
        self.chunk_size = max(1, int(getattr(settings, "RECONCILE_CHUNK_ROOMS", 1000)))
        self.agents: dict[str, Agent] = {}
        self.rules: Any = None
        self.enqueue_request: list[int] = []
        self.enqueue_deadline: list[int] = []

    # -- LiveKit ---------------------------------------------------------------------------

    def _livekit_rooms(self) -> dict[str, LkRoom]:
        """LiveKit's rooms by name, probe rooms left out. One ListRooms: LiveKit's RoomService
        has no paging, and a `names` filter cannot show the rooms the ledger lacks. Its answer
        carries every room (about 230 bytes each on the wire), so its deadline is its own."""
        timeout = float(getattr(settings, "RECONCILE_LIST_ROOMS_TIMEOUT_S", 60.0))
        listed = livekit_run(lambda client: client.list_rooms(self.scope or ()), timeout_s=timeout)
        return {r.name: r for r in listed if not is_canary_room(r.name)}

    def _participants(self, names: list[str]) -> dict[str, list[LkParticipant]]:
        concurrency = max(1, int(getattr(settings, "RECONCILE_CONCURRENCY", 16)))

        async def fetch(client: LiveKit) -> dict[str, list[LkParticipant]]:
            semaphore = asyncio.Semaphore(concurrency)
            answers: dict[str, list[LkParticipant]] = {}

            async def one(name: str) -> None:
                async with semaphore:
                    try:
                        answers[name] = await client.list_participants(name)
                    except LiveKitError as exc:
                        # One room's failure must not stop the pass; it is looked at next time.
                        self.report.livekit_errors += 1
                        if len(self.report.notes) < 20:
                            self.report.notes.append(f"{name}: {exc.message}")

            await asyncio.gather(*(one(name) for name in names))
            return answers

        return livekit_run(fetch) if names else {}

    # -- the pass --------------------------------------------------------------------------

    def run(self) -> None:
        in_livekit = self._livekit_rooms()
        self.report.rooms_in_livekit = len(in_livekit)
        self.agents = {a.agent_name: a for a in Agent.objects.all()}
        self.rules = config_get().rules
        # 1. The rooms the ledger holds live (or the scope's rooms), a page at a time by key,
        #    each with what LiveKit shows of it.
        if self.scope is not None:
            held = Room.objects.filter(name__in=self.scope)
        else:
            held = Room.objects.filter(status__in=(Room.Status.PENDING, Room.Status.ACTIVE))
        for page in self._pages(held):
            self._chunk(page, {r.name: lk for r in page if (lk := in_livekit.pop(r.name, None))})
        # 2. Rooms LiveKit has that the ledger does not hold live: new to it, or finished there
        #    (a new session).
        while in_livekit:
            shown = dict(in_livekit.popitem() for _ in range(min(self.chunk_size, len(in_livekit))))
            self._chunk(list(Room.objects.filter(name__in=list(shown)).only(*ROOM_FIELDS)), shown)
        # 3. Rooms finished in the ledger and gone from LiveKit that still have live dispatches
        #    (the Dispatch API's, whose CreateDispatch will make the room): a lost task is re-sent.
        if self.scope is None:
            waiting = Room.objects.filter(
                pk__in=Dispatch.objects.filter(status__in=LIVE_STATUSES).values("room_id")
            ).exclude(status__in=(Room.Status.PENDING, Room.Status.ACTIVE))
            for page in self._pages(waiting):
                self._chunk(page, {})

    def _pages(self, query: QuerySet[Room]) -> Iterator[list[Room]]:
        """`query`'s rooms in pages of the chunk size, by key: each page is read after the
        previous one was written, and a room is never read twice."""
        after = 0
        while True:
            page = list(query.filter(pk__gt=after).order_by("pk").only(*ROOM_FIELDS)[: self.chunk_size])
            if not page:
                return
            yield page
            if len(page) < self.chunk_size:
                return
            after = page[-1].pk

    def _chunk(self, held: list[Room], in_livekit: dict[str, LkRoom]) -> None:
        """One chunk: `held`, the ledger's rows of these rooms, and `in_livekit`, LiveKit's
        view of those of them it has (rooms it has that the ledger lacks among them)."""
        ledger = {room.name: room for room in held}
        live_by_room: dict[int, list[Dispatch]] = defaultdict(list)
        ids = [room.pk for room in held]
        if ids:
            for dispatch in Dispatch.objects.filter(room_id__in=ids, status__in=LIVE_STATUSES).select_related(
                "agent"
            ):
                live_by_room[dispatch.room_id].append(dispatch)

        # Which rooms need their participants: those where the portal wants an agent.
        wanted_by_rule: dict[str, list[Any]] = {}
        to_check: list[str] = []
        for name in in_livekit:
            explicit = [
                a
                for a in self.rules.evaluate(Join(room_name=name)).agents
                if a.delivery == "explicit" and a.agent_name and a.agent_name in self.agents
            ]
            if explicit:
                wanted_by_rule[name] = explicit
            room = ledger.get(name)
            if explicit or (room is not None and live_by_room.get(room.pk)):
                to_check.append(name)
        participants = self._participants(to_check)
        self.report.rooms_checked += len(participants)

        # One transaction per chunk: a chunk's writes stand together, and no lock is held
        # across the whole pass.
        with transaction.atomic():
            self.enqueue_request, self.enqueue_deadline = [], []
            rooms = self._rooms_write(in_livekit, ledger, live_by_room)
            self._compare(rooms, participants, live_by_room, wanted_by_rule, self.agents)
            for dispatch_id in self.enqueue_request:
                dispatch_request_enqueue(dispatch_id=dispatch_id)
            for dispatch_id in self.enqueue_deadline:
                dispatch_deadline_enqueue(dispatch_id=dispatch_id)

    # -- rooms -----------------------------------------------------------------------------

    def _rooms_write(
        self, in_livekit: dict[str, LkRoom], ledger: dict[str, Room], live_by_room: dict[int, list[Dispatch]]
    ) -> dict[str, Room]:
        now = self.now
        observed = services.rooms_observe(
            seen=[
                services.RoomSeen(
                    name=name, sid=lk.sid, started_at=lk.created_at, num_participants=lk.num_participants
                )
                for name, lk in in_livekit.items()
            ],
            known=ledger,
            now=now,
        )
        ledger.update(observed.rooms)
        self.report.rooms_recorded += len(observed.started)
        for room in observed.new_sessions:
            # The old session's dispatches were closed; only this one's stay live.
            began = room.started_at or now
            live_by_room[room.pk] = [
                d
                for d in live_by_room.get(room.pk, [])
                if d.status == Dispatch.Status.PENDING or services.livekit_took_at(d) >= began
            ]

        # Rooms the ledger holds as live that LiveKit no longer has.
        gone = [
            room
            for name, room in ledger.items()
            if name not in in_livekit and room.status == Room.Status.ACTIVE
        ]
        expired = [
            room
            for name, room in ledger.items()
            if name not in in_livekit
            and room.status == Room.Status.PENDING
            and room.created_at < now - timedelta(seconds=PENDING_ROOM_EXPIRY_S)
        ]
        if gone:
            self._rooms_close(
                gone,
                live_by_room,
                to=Dispatch.Status.ROOM_CLOSED,
                detail="the room no longer exists in LiveKit (reconcile)",
            )
            self.report.rooms_closed += len(gone)
        if expired:
            self._rooms_close(
                expired,
                live_by_room,
                to=Dispatch.Status.CANCELLED,
                detail="no participant ever joined with the token (reconcile)",
            )
            self.report.tokens_expired += len(expired)
        return {name: room for name, room in ledger.items() if name in in_livekit}

    def _rooms_close(
        self, rooms: list[Room], live_by_room: dict[int, list[Dispatch]], *, to: str, detail: str
    ) -> None:
        live = {room.pk: live_by_room.pop(room.pk, []) for room in rooms}
        services.rooms_close(rooms=rooms, to=to, detail=detail, live=live, now=self.now)

    # -- agents ----------------------------------------------------------------------------

    def _compare(
        self,
        rooms: dict[str, Room],
        participants: dict[str, list[LkParticipant]],
        live_by_room: dict[int, list[Dispatch]],
        wanted_by_rule: dict[str, list[Any]],
        agents: dict[str, Agent],
    ) -> None:
        joins: list[tuple[Dispatch, LkParticipant]] = []
        lefts: list[Dispatch] = []
        removals: list[tuple[Dispatch, LkParticipant, Verdict]] = []
        candidates: list[tuple[Room, str, Any, LkParticipant | None]] = []  # room, agent name, rule, present
        sightings: list[tuple[str, str, str]] = []
        ended = self._ended_rows({rooms[name].pk: rooms[name] for name in participants})
        for name, present in participants.items():
            room = rooms[name]
            # Earliest first: of two agents of one name, the one that came first stays.
            agent_participants = sorted(
                (p for p in present if p.is_agent),
                key=lambda p: (p.joined_at is None, p.joined_at or self.now),
            )
            sightings += services.agent_sightings(
                room_name=name, how="reconcile", participants=agent_participants
            )
            live = live_by_room.get(room.pk, [])
            rows = sorted([*live, *ended.get(room.pk, [])], key=lambda d: -d.pk)
            identities = {p.identity for p in agent_participants}
            claimed: dict[int, str] = {}
            live_names = {d.agent_name for d in live}
            for participant in agent_participants:
                match = participant_match(
                    participant=participant, rows=rows, present=identities, claimed=claimed
                )
                dispatch = match.dispatch
                if match.verdict is Verdict.JOINED and dispatch is not None:
                    claimed[dispatch.pk] = participant.identity
                    if (
                        dispatch.status != Dispatch.Status.AGENT_JOINED
                        or dispatch.participant_identity != participant.identity
                    ):
                        joins.append((dispatch, participant))
                elif match.verdict in (Verdict.DUPLICATE, Verdict.CANCELLED) and dispatch is not None:
                    removals.append((dispatch, participant, match.verdict))
                # Unnamed agents are LiveKit's automatic ones (the implicit "" dispatch): not ours.
                elif (
                    participant.agent_name
                    and participant.agent_name in agents
                    and participant.agent_name not in live_names
                ):
                    candidates.append((room, participant.agent_name, None, participant))
                    live_names.add(participant.agent_name)
            for dispatch in live:
                if dispatch.pk in claimed:
                    continue
                if dispatch.status == Dispatch.Status.AGENT_JOINED:
                    lefts.append(dispatch)
                elif dispatch.status in WAITING_STATUSES:
                    self._waiting(dispatch, room)
            for applied in wanted_by_rule.get(name, []):
                if applied.agent_name not in live_names and agents[applied.agent_name].enabled:
                    candidates.append((room, applied.agent_name, applied, None))
                    live_names.add(applied.agent_name)
        # Rooms not looked at (not in LiveKit yet: the Dispatch API or a token will create
        # them) may hold explicit dispatches whose task was lost.
        checked = {rooms[name].pk for name in participants}
        for room_id, live in live_by_room.items():
            if room_id not in checked:
                for dispatch in live:
                    if (
                        dispatch.status == Dispatch.Status.PENDING
                        and dispatch.delivery == Dispatch.Delivery.EXPLICIT
                    ):
                        self._requeue_if_stale(dispatch)
        # One row per agent name, however many rooms show it.
        if sightings:
            services.agents_seen_record(seen=sightings)
        self._joins_write(joins)
        self._lefts_write(lefts, rooms)
        self._removals_write(removals)
        self._candidates(candidates, agents)

    def _ended_rows(self, rooms: dict[int, Room]) -> dict[int, list[Dispatch]]:
        """Ended rows of each room's current session (a cancelled attempt's agent must not be
        adopted), in one query per chunk of rooms."""
        found: dict[int, list[Dispatch]] = defaultdict(list)
        ids = sorted(rooms)
        for start in range(0, len(ids), NAME_CHUNK):
            chunk = ids[start : start + NAME_CHUNK]
            earliest = min((t for i in chunk if (t := rooms[i].started_at)), default=None)
            query = Dispatch.objects.filter(room_id__in=chunk, ended_at__isnull=False).exclude(
                status__in=LIVE_STATUSES
            )
            if earliest is not None:
                query = query.filter(ended_at__gte=earliest)
            for dispatch in query:
                began = rooms[dispatch.room_id].started_at
                if began is None or (dispatch.ended_at is not None and dispatch.ended_at >= began):
                    found[dispatch.room_id].append(dispatch)
        return found

    def _removals_write(self, removals: list[tuple[Dispatch, LkParticipant, Verdict]]) -> None:
        for dispatch, participant, verdict in removals:
            if verdict is Verdict.DUPLICATE:
                why = (
                    f"a second '{dispatch.agent_name}' agent '{participant.identity}' is in the room "
                    f"(this dispatch's agent is '{dispatch.participant_identity}'; found by reconcile)"
                )
            else:
                why = (
                    f"agent participant '{participant.identity}' of this cancelled dispatch is in the "
                    "room (found by reconcile)"
                )
            services.agent_extra_remove(dispatch=dispatch, identity=participant.identity, why=why)
            self.report.agents_removed += 1

    def _waiting(self, dispatch: Dispatch, room: Room) -> None:
        now = self.now
        if dispatch.deadline_at is not None:
            if dispatch.deadline_at < now - timedelta(seconds=OVERDUE_GRACE_S):
                self.enqueue_deadline.append(dispatch.pk)
                self.report.deadline_checks += 1
        elif dispatch.status == Dispatch.Status.PENDING and dispatch.delivery == Dispatch.Delivery.EXPLICIT:
            self._requeue_if_stale(dispatch)
        elif dispatch.status == Dispatch.Status.PENDING and dispatch.delivery == Dispatch.Delivery.TOKEN:
            dispatch.room = room
            services.dispatch_deadline_arm(dispatch=dispatch)

    def _requeue_if_stale(self, dispatch: Dispatch) -> None:
        """A pending explicit dispatch nothing has touched for a while lost its task (broker
        restart, the filesystem broker's lack of redelivery): send it again. A task still
        retrying keeps `updated_at` fresh; the request lease stops two runs calling at once."""
        stale = self.now - timedelta(seconds=STALE_PENDING_S)
        lease = dispatch.request_lease_until
        if dispatch.updated_at < stale and (lease is None or lease < self.now):
            self.enqueue_request.append(dispatch.pk)
            self.report.requeued += 1

    def _joins_write(self, joins: list[tuple[Dispatch, LkParticipant]]) -> None:
        for dispatch, participant in joins:
            if dispatch.status == Dispatch.Status.AGENT_JOINED:
                services.dispatch_transition(
                    dispatch=dispatch,
                    to=Dispatch.Status.AGENT_JOINED,
                    expect=(Dispatch.Status.AGENT_JOINED,),
                    detail=f"agent participant is now '{participant.identity}' (reconcile)",
                    participant_identity=participant.identity,
                )
            elif services.agent_joined_record(dispatch=dispatch, participant=participant, how="reconcile"):
                self.report.agents_joined += 1

    def _lefts_write(self, lefts: list[Dispatch], rooms: dict[str, Room]) -> None:
        rooms_by_pk = {room.pk: room for room in rooms.values()}
        for dispatch in lefts:
            dispatch.room = rooms_by_pk[dispatch.room_id]
            error = f"agent participant '{dispatch.participant_identity}' no longer in the room (found by reconcile)"
            outcome = services.agent_left_record(dispatch=dispatch, error=error)
            if outcome is None:
                continue
            self.report.agents_left += 1
            if outcome:
                self.report.redispatched += 1
            else:
                self.report.gave_up += 1

    def _candidates(
        self, candidates: list[tuple[Room, str, Any, LkParticipant | None]], agents: dict[str, Agent]
    ) -> None:
        """Rule agents missing from a room, and managed agents present without a row: act
        only if this room session has no row at all for the agent (a cancelled one, or one
        the portal gave up on, stays that way)."""
        if not candidates:
            return
        room_ids = sorted({room.pk for room, *_ in candidates})
        seen: set[tuple[int, str]] = set()
        starts = {room.pk: room.started_at for room, *_ in candidates}
        for start in range(0, len(room_ids), NAME_CHUNK):
            rows = Dispatch.objects.filter(room_id__in=room_ids[start : start + NAME_CHUNK]).values_list(
                "room_id", "agent_name", "created_at"
            )
            for room_id, agent_name, created_at in rows:
                began = starts.get(room_id)
                if began is None or created_at >= began:
                    seen.add((room_id, agent_name))
        for room, agent_name, applied, present in candidates:
            if (room.pk, agent_name) in seen:
                continue
            agent = agents[agent_name]
            if present is not None:
                _, created = services.dispatch_create(
                    room=room,
                    agent=agent,
                    source=Dispatch.Source.RECONCILE,
                    status=Dispatch.Status.AGENT_JOINED,
                    metadata="",
                    participant_identity=present.identity,
                    joined_at=present.joined_at or self.now,
                    detail=f"agent participant '{present.identity}' found in the room with no dispatch "
                    "in the ledger; recorded (reconcile)",
                )
                self.report.agents_adopted += created
            else:
                _, created = services.dispatch_create(
                    room=room,
                    agent=agent,
                    source=Dispatch.Source.RECONCILE,
                    metadata=applied.metadata,
                    rule_name=applied.rule,
                    deployment=applied.deployment,
                    attributes=dict(applied.attributes),
                    detail=f"explicit rule '{applied.rule}' applied to a room that lacked its agent (reconcile)",
                )
                self.report.dispatched += created
