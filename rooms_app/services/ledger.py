"""The ledger's writes: rooms, dispatch rows and their transitions, and what follows a failed
attempt (the next attempt, the fallback agent, or giving up).

Every status change is a compare-and-set (`UPDATE ... WHERE status IN expected`) followed by a
DispatchEvent, so a retried or duplicated Celery task, a late webhook and a reconcile pass can
all run the same step and only one of them wins it. Work for LiveKit is enqueued after commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from agents_app.models import Agent
from dispatchportal import metrics
from livekit_boundary.client import (
    LkDispatch,
    LkParticipant,
)

from ..models import LIVE_STATUSES, WAITING_STATUSES, Dispatch, DispatchEvent, Room
from .jobs import dispatch_deadline_enqueue, dispatch_request_enqueue, participant_remove_enqueue

logger = logging.getLogger(__name__)

FINAL_STATUSES = tuple(s for s in Dispatch.Status.values if s not in LIVE_STATUSES)
# Extra seconds after a join deadline before the check runs, so an agent joining at the last
# moment is seen as joined rather than timed out.
DEADLINE_GRACE_S = 0.25
# A room LiveKit reported this recently is taken to still exist without asking again.
ROOM_FRESH = timedelta(seconds=10)

_TIMESTAMP_FIELD: dict[str, str] = {
    Dispatch.Status.REQUESTED: "requested_at",
    Dispatch.Status.JOB_ASSIGNED: "job_assigned_at",
    Dispatch.Status.AGENT_JOINED: "joined_at",
}


def _log(level: int, message: str, dispatch: Dispatch | None = None, **extra: Any) -> None:
    """Dispatch-path logs carry room, agent and dispatch id as fields (JSON logs)."""
    if dispatch is not None:
        room = dispatch._state.fields_cache.get("room")
        extra = {
            "room": room.name if room is not None else "",
            "agent": dispatch.agent_name,
            "dispatch_id": dispatch.pk,
            "attempt": dispatch.attempt,
            **extra,
        }
    logger.log(level, message, extra=extra)


# --- rooms ----------------------------------------------------------------------------------


def room_get_or_create(*, name: str, **defaults: Any) -> Room:
    room, _ = _room_get_or_create(name=name, **defaults)
    return room


def _room_get_or_create(*, name: str, **defaults: Any) -> tuple[Room, bool]:
    room = Room.objects.filter(name=name).first()
    if room is not None:
        return room, False
    try:
        with transaction.atomic():
            return Room.objects.create(name=name, **defaults), True
    except IntegrityError:  # created by a concurrent trigger
        return Room.objects.get(name=name), False


@dataclass(frozen=True)
class RoomSeen:
    """LiveKit shows a room: a room_started or participant webhook, or a ListRooms entry.
    `num_participants` None: the report does not say."""

    name: str
    sid: str
    started_at: datetime | None
    num_participants: int | None = None


@dataclass
class RoomsObserved:
    """What `rooms_observe` did: every room seen (as the ledger now holds it), those that went
    live with this report (new, back from pending or finished, or a new LiveKit session) and
    which of them are a new LiveKit session of a room the ledger had, and how many rows it
    created."""

    rooms: dict[str, Room] = field(default_factory=dict)
    started: list[Room] = field(default_factory=list)
    new_sessions: list[Room] = field(default_factory=list)
    created: int = 0


ROOM_WRITE_BATCH = 500


def rooms_observe(
    *, seen: Sequence[RoomSeen], known: Mapping[str, Room] | None = None, now: datetime | None = None
) -> RoomsObserved:
    """The one writer of a room's start, for the webhooks (one room) and reconcile (in bulk):
    each room LiveKit shows is recorded live with its session id and participant count. A
    room the ledger lacks is created; a pending or finished room, or one with a new LiveKit
    session, goes live (the old session's dispatches are closed); every room seen gets
    `last_seen_at`. `known`: the ledger's rows for these names when the caller has read them."""
    now = now or timezone.now()
    if known is None:
        known = {r.name: r for r in _rooms_named([s.name for s in seen])}
    observed = RoomsObserved()
    changed: dict[int, Room] = {}
    new_sessions = observed.new_sessions

    def observe(room: Room, report: RoomSeen) -> None:
        observed.rooms[report.name] = room
        new_session = bool(report.sid) and bool(room.sid) and room.sid != report.sid
        went_live = room.status != Room.Status.ACTIVE or new_session
        if went_live:
            room.status, room.finished_at = Room.Status.ACTIVE, None
            room.started_at = report.started_at or (None if new_session else room.started_at) or now
            observed.started.append(room)
            if new_session:
                new_sessions.append(room)
        if went_live or (report.sid and not room.sid):
            room.sid = report.sid or room.sid
            changed[room.pk] = room
        if report.num_participants is not None and room.num_participants != report.num_participants:
            room.num_participants = report.num_participants
            changed[room.pk] = room
        room.last_seen_at = now

    missing: list[RoomSeen] = []
    fresh: set[int] = set()
    for report in seen:
        room = known.get(report.name)
        if room is None:
            missing.append(report)
        else:
            observe(room, report)
    if missing:
        Room.objects.bulk_create(
            [
                Room(
                    name=r.name,
                    sid=r.sid,
                    status=Room.Status.ACTIVE,
                    started_at=r.started_at or now,
                    last_seen_at=now,
                    num_participants=r.num_participants or 0,
                )
                for r in missing
            ],
            batch_size=ROOM_WRITE_BATCH,
            # The token path or another report may record one of these rooms meanwhile: keep
            # that row and observe it like any other instead of failing on the name.
            ignore_conflicts=True,
        )
        reports = {r.name: r for r in missing}
        for room in _rooms_named(list(reports)):
            if (
                room.status == Room.Status.ACTIVE
                and room.last_seen_at == now
                and room.sid == reports[room.name].sid
            ):
                observed.rooms[room.name] = room
                observed.started.append(room)
                observed.created += 1
                fresh.add(room.pk)
            else:
                observe(room, reports[room.name])
    if changed:
        Room.objects.bulk_update(
            list(changed.values()),
            ["status", "sid", "started_at", "finished_at", "num_participants", "last_seen_at"],
            batch_size=ROOM_WRITE_BATCH,
        )
    touched = [room.pk for room in observed.rooms.values() if room.pk not in changed and room.pk not in fresh]
    for start in range(0, len(touched), ROOM_CHUNK):
        Room.objects.filter(pk__in=touched[start : start + ROOM_CHUNK]).update(last_seen_at=now)
    for room in new_sessions:
        session_close_previous(room=room, started_at=room.started_at or now)
    return observed


def _rooms_named(names: Sequence[str]) -> list[Room]:
    rooms: list[Room] = []
    for start in range(0, len(names), ROOM_CHUNK):
        rooms += Room.objects.filter(name__in=names[start : start + ROOM_CHUNK])
    return rooms


def room_observe(
    *,
    name: str,
    sid: str,
    started_at: datetime | None,
    num_participants: int | None = None,
    known: Mapping[str, Room] | None = None,
) -> Room:
    """One room LiveKit reports (room_started or a participant event): `rooms_observe` for it
    (`known` as there); a room that went live with this report arms its token-delivered
    agents' join deadlines."""
    observed = rooms_observe(
        seen=[RoomSeen(name=name, sid=sid, started_at=started_at, num_participants=num_participants)],
        known=known,
    )
    room = observed.rooms[name]
    if observed.started:
        token_deadlines_arm(room=room)
    return room


def livekit_took_at(dispatch: Dispatch) -> datetime:
    """When LiveKit had this dispatch (requested, or the agent seen), for telling sessions apart."""
    return dispatch.requested_at or dispatch.joined_at or dispatch.created_at


def session_close_previous(*, room: Room, started_at: datetime) -> int:
    """Dispatches LiveKit took before this session began belong to the old session. (Pending
    ones stay: a token minted before the room started is how a session begins.)"""
    stale = [
        d
        for d in Dispatch.objects.filter(
            room=room,
            status__in=(
                Dispatch.Status.REQUESTED,
                Dispatch.Status.JOB_ASSIGNED,
                Dispatch.Status.AGENT_JOINED,
            ),
        )
        if livekit_took_at(d) < started_at
    ]
    closed = 0
    for dispatch in stale:
        dispatch.room = room
        closed += dispatch_transition(
            dispatch=dispatch,
            to=Dispatch.Status.ROOM_CLOSED,
            expect=LIVE_STATUSES,
            detail="the room finished and started again (new session); this dispatch was for the old one",
        )
    return closed


def room_finished(*, name: str, sid: str = "", reason: str = "LiveKit reported room_finished") -> Room | None:
    """The room is gone (the room_finished webhook): close it with `rooms_close`, unless the
    event is about an older session."""
    room = Room.objects.filter(name=name).first()
    if room is None:
        return None
    if sid and room.sid and room.sid != sid:
        return room  # a late event about an older session
    rooms_close(rooms=[room], to=Dispatch.Status.ROOM_CLOSED, detail=reason)
    return room


ROOM_CHUNK = 5000


def rooms_close(
    *,
    rooms: Sequence[Room],
    to: str,
    detail: str,
    live: Mapping[int, Sequence[Dispatch]] | None = None,
    now: datetime | None = None,
) -> int:
    """The one writer of a room's end, for the room_finished webhook (one room) and reconcile
    (in bulk): the rooms are finished (no participants), and every dispatch still live in them
    ends as `to` through `dispatch_transition`. `live`: the live dispatches by room id when the
    caller has already read them. Returns how many dispatches it ended."""
    now = now or timezone.now()
    ids = [room.pk for room in rooms]
    for start in range(0, len(ids), ROOM_CHUNK):
        Room.objects.filter(pk__in=ids[start : start + ROOM_CHUNK]).update(
            status=Room.Status.FINISHED, finished_at=now, num_participants=0
        )
    for room in rooms:
        room.status, room.finished_at, room.num_participants = Room.Status.FINISHED, now, 0
    if live is None:
        found: dict[int, list[Dispatch]] = {}
        for dispatch in Dispatch.objects.filter(room_id__in=ids, status__in=LIVE_STATUSES):
            found.setdefault(dispatch.room_id, []).append(dispatch)
        live = found
    by_pk = {room.pk: room for room in rooms}
    ended = 0
    for room_id, dispatches in live.items():
        for dispatch in dispatches:
            dispatch.room = by_pk[room_id]
            ended += dispatch_transition(dispatch=dispatch, to=to, expect=LIVE_STATUSES, detail=detail)
    return ended


def room_participants_observe(*, room: Room, sid: str, num_participants: int) -> None:
    """LiveKit's participant count for the room (a participant event): kept for the current
    session only; a finished room, or an event about an older session, changes nothing."""
    if room.status == Room.Status.ACTIVE and sid in ("", room.sid):
        Room.objects.filter(pk=room.pk).update(num_participants=num_participants)
        room.num_participants = num_participants


# --- dispatch rows --------------------------------------------------------------------------


def dispatch_transition(
    *, dispatch: Dispatch, to: str, expect: Iterable[str], detail: str, **fields: Any
) -> bool:
    """Move `dispatch` to `to` if its status is still one of `expect`; record the event.
    Returns whether this caller made the change (False: someone else got there first)."""
    now = timezone.now()
    expect = tuple(expect)
    values: dict[str, Any] = {"status": to, "updated_at": now, **fields}
    stamp = _TIMESTAMP_FIELD.get(to)
    if stamp and stamp not in values:
        values[stamp] = now
    if to in FINAL_STATUSES:
        values.setdefault("ended_at", now)
        values.setdefault("deadline_at", None)
    if not Dispatch.objects.filter(pk=dispatch.pk, status__in=expect).update(**values):
        return False
    previous = dispatch.status if dispatch.status in expect else ""
    DispatchEvent.objects.create(
        dispatch_id=dispatch.pk, at=now, previous_status=previous, status=to, detail=detail
    )
    for key, value in values.items():
        setattr(dispatch, key, value)
    metrics.dispatch_transition_record(dispatch=dispatch, status=to)
    level = (
        logging.WARNING
        if to in (Dispatch.Status.NO_WORKER, Dispatch.Status.FAILED, Dispatch.Status.TIMED_OUT)
        else logging.INFO
    )
    _log(level, f"dispatch {previous or '?'} -> {to}: {detail}", dispatch, status=to)
    return True


def dispatch_note(*, dispatch: Dispatch, detail: str, level: int = logging.INFO) -> None:
    """A timeline entry that is not a transition (a retry, a cleanup, a warning)."""
    DispatchEvent.objects.create(
        dispatch_id=dispatch.pk,
        at=timezone.now(),
        previous_status=dispatch.status,
        status=dispatch.status,
        detail=detail,
    )
    _log(level, detail, dispatch)


def default_metadata(agent: Agent) -> str:
    return json.dumps(agent.default_metadata, separators=(",", ":")) if agent.default_metadata else ""


def dispatch_create(
    *,
    room: Room,
    agent: Agent,
    source: str,
    delivery: str = Dispatch.Delivery.EXPLICIT,
    metadata: str | None = None,
    rule_name: str = "",
    requested_by: str = "",
    identity_trigger: str = "",
    attempt: int = 1,
    previous: Dispatch | None = None,
    status: str = Dispatch.Status.PENDING,
    detail: str = "",
    request_countdown: float | None = None,
    **fields: Any,
) -> tuple[Dispatch, bool]:
    """Record that `agent` is wanted in `room`, unless it already has a live dispatch there
    (that one is returned, with False). An explicit dispatch is sent to LiveKit by a task
    after commit (`request_countdown` seconds later when the caller makes the first try
    itself). The database constraint decides races between triggers."""
    for _ in range(3):
        try:
            with transaction.atomic():
                now = timezone.now()
                dispatch = Dispatch.objects.create(
                    room=room,
                    agent=agent,
                    agent_name=agent.agent_name,
                    source=source,
                    delivery=delivery,
                    metadata=default_metadata(agent) if metadata is None else metadata,
                    rule_name=rule_name,
                    requested_by=requested_by,
                    participant_identity_trigger=identity_trigger,
                    attempt=attempt,
                    previous=previous,
                    status=status,
                    **fields,
                )
                DispatchEvent.objects.create(
                    dispatch=dispatch,
                    at=now,
                    previous_status="",
                    status=status,
                    detail=detail or _created_detail(dispatch),
                )
        except IntegrityError:
            existing = (
                Dispatch.objects.select_related("room")
                .filter(room=room, agent_name=agent.agent_name, status__in=LIVE_STATUSES)
                .first()
            )
            if existing is not None:
                return existing, False
            continue  # the live one ended between our insert and this read: try again
        _created_follow(dispatch=dispatch, room=room, agent=agent, request_countdown=request_countdown)
        return dispatch, True
    raise IntegrityError(f"could not record a dispatch of {agent.agent_name!r} in {room.name!r}")


def _created_follow(
    *, dispatch: Dispatch, room: Room, agent: Agent, request_countdown: float | None = None
) -> None:
    """What follows a new dispatch row: an explicit one is sent to LiveKit after commit; a
    token-delivered one in a live room gets its join deadline (unless its row has it)."""
    _log(
        logging.INFO, f"dispatch recorded: {dispatch.get_source_display()}", dispatch, status=dispatch.status
    )
    if dispatch.status != Dispatch.Status.PENDING:
        return
    if dispatch.delivery == Dispatch.Delivery.EXPLICIT:
        dispatch_request_enqueue(dispatch_id=dispatch.pk, countdown=request_countdown)
    elif room.status == Room.Status.ACTIVE:
        if dispatch.deadline_at is None:
            dispatch_deadline_arm(dispatch=dispatch, agent=agent)
        else:
            _deadline_check_schedule(dispatch=dispatch)


def dispatches_record(*, dispatches: Sequence[Dispatch], notes: Sequence[tuple[Dispatch, str]] = ()) -> None:
    """`dispatch_create` for many new `pending` rows at once (the token facts' application):
    the rows in one INSERT, their creation events and then `notes` (timeline entries on these
    or existing rows) in another, and what follows each new row as `dispatch_create` does it.
    `dispatches` carry `room` and `agent`; a token-delivered one in a live room gets its
    deadline in the INSERT itself. All or nothing: IntegrityError when one would be a second
    live dispatch of its agent in its room (a concurrent trigger recorded it first)."""
    now = timezone.now()
    for dispatch in dispatches:
        if (
            dispatch.delivery == Dispatch.Delivery.TOKEN
            and dispatch.room.status == Room.Status.ACTIVE
            and dispatch.agent is not None
        ):
            dispatch.deadline_at = now + timedelta(seconds=dispatch.agent.join_deadline_s)
    with transaction.atomic():
        Dispatch.objects.bulk_create(dispatches)
        events = [
            DispatchEvent(
                dispatch_id=d.pk, at=now, previous_status="", status=d.status, detail=_created_detail(d)
            )
            for d in dispatches
        ]
        events += [
            DispatchEvent(dispatch_id=d.pk, at=now, previous_status=d.status, status=d.status, detail=detail)
            for d, detail in notes
        ]
        DispatchEvent.objects.bulk_create(events)
    for dispatch in dispatches:
        assert dispatch.agent is not None
        _created_follow(dispatch=dispatch, room=dispatch.room, agent=dispatch.agent)
    for dispatch, detail in notes:
        _log(logging.INFO, detail, dispatch)


def _created_detail(dispatch: Dispatch) -> str:
    who = f" by {dispatch.requested_by}" if dispatch.requested_by else ""
    rule = f" (rule '{dispatch.rule_name}')" if dispatch.rule_name and dispatch.rule_name != "client" else ""
    if dispatch.source == Dispatch.Source.TOKEN:
        how = "carried in the token" if dispatch.delivery == Dispatch.Delivery.TOKEN else "explicit dispatch"
        ident = (
            f" of '{dispatch.participant_identity_trigger}'" if dispatch.participant_identity_trigger else ""
        )
        return f"token minted{ident}{who}{rule}: {how}"
    if dispatch.previous_id:
        return f"re-dispatch (attempt {dispatch.attempt}) replacing dispatch #{dispatch.previous_id}"
    return f"{dispatch.get_source_display()}{who}{rule}"


def dispatch_deadline_arm(
    *, dispatch: Dispatch, agent: Agent | None = None, start: datetime | None = None
) -> None:
    """Give the agent its join deadline from now (or `start`) and schedule the check."""
    agent = agent or dispatch.agent
    seconds = agent.join_deadline_s if agent is not None else 15
    deadline = (start or timezone.now()) + timedelta(seconds=seconds)
    Dispatch.objects.filter(pk=dispatch.pk).update(deadline_at=deadline)
    dispatch.deadline_at = deadline
    _deadline_check_schedule(dispatch=dispatch)


def _deadline_check_schedule(*, dispatch: Dispatch) -> None:
    assert dispatch.deadline_at is not None
    countdown = max(0.0, (dispatch.deadline_at - timezone.now()).total_seconds()) + DEADLINE_GRACE_S
    dispatch_deadline_enqueue(dispatch_id=dispatch.pk, countdown=countdown)


def token_deadlines_arm(*, room: Room) -> int:
    """A room went live: token-delivered agents now have their deadline (LiveKit created
    their dispatch if the token's join created the room, and ignored it otherwise)."""
    waiting = list(
        Dispatch.objects.select_related("agent").filter(
            room=room,
            status=Dispatch.Status.PENDING,
            delivery=Dispatch.Delivery.TOKEN,
            deadline_at__isnull=True,
        )
    )
    for dispatch in waiting:
        dispatch_deadline_arm(dispatch=dispatch)
    return len(waiting)


def next_attempt_plan(
    *, dispatch: Dispatch, agent: Agent | None, fallback: Agent | None
) -> tuple[Agent, int, str] | None:
    """What follows a failed attempt: (agent, attempt number, source), or None to give up.
    The same agent until its max attempts, then its fallback once per chain (a fallback's
    own failures never fall back again, so A -> B -> A cannot loop)."""
    if agent is not None and agent.enabled and dispatch.attempt < agent.max_attempts:
        return agent, dispatch.attempt + 1, dispatch.source
    if (
        agent is not None
        and dispatch.source != Dispatch.Source.FALLBACK
        and fallback is not None
        and fallback.enabled
    ):
        return fallback, 1, Dispatch.Source.FALLBACK
    return None


def give_up_reason(*, dispatch: Dispatch, agent: Agent | None) -> str:
    why = (
        "agent deleted"
        if agent is None
        else ("agent disabled" if not agent.enabled else f"{dispatch.attempt} attempt(s)")
    )
    return f"gave up on '{dispatch.agent_name}' in this room after {why}: {dispatch.last_error}"


def dispatch_retry(*, dispatch: Dispatch) -> Dispatch | None:
    """After a failed attempt: the next attempt, else the fallback agent, else give up, loudly
    (an ERROR log line and a timeline entry the admin and the doctor show)."""
    agent = dispatch.agent
    fallback = (
        Agent.objects.filter(pk=agent.fallback_id).first()
        if agent is not None and agent.fallback_id
        else None
    )
    nxt = next_attempt_plan(dispatch=dispatch, agent=agent, fallback=fallback)
    if nxt is None:
        dispatch_note(
            dispatch=dispatch, detail=give_up_reason(dispatch=dispatch, agent=agent), level=logging.ERROR
        )
        return None
    next_agent, attempt, source = nxt
    room = Room.objects.get(pk=dispatch.room_id)
    new, created = dispatch_create(
        room=room,
        agent=next_agent,
        source=source,
        metadata=dispatch.metadata if next_agent.pk == dispatch.agent_id else None,
        rule_name=dispatch.rule_name,
        # The same agent keeps its LiveKit deployment and attributes; a fallback has its own.
        **(
            {"deployment": dispatch.deployment, "attributes": dispatch.attributes}
            if next_agent.pk == dispatch.agent_id
            else {}
        ),
        requested_by=dispatch.requested_by,
        attempt=attempt,
        previous=dispatch,
        detail=(
            f"re-dispatch (attempt {attempt}) after: {dispatch.last_error}"
            if source != Dispatch.Source.FALLBACK or next_agent.pk == dispatch.agent_id
            else f"fallback for '{dispatch.agent_name}' after {dispatch.attempt} attempt(s): {dispatch.last_error}"
        ),
    )
    return new if created else None


def agent_joined_record(
    *, dispatch: Dispatch, participant: LkParticipant, livekit: LkDispatch | None = None, how: str = ""
) -> bool:
    """The agent's participant is in the room. Its job (the identity `agent-AJ_…` names it,
    or ListDispatch shows it) is recorded first if the ledger had not seen it."""
    fields: dict[str, Any] = {"participant_identity": participant.identity, "last_error": ""}
    joined = participant.joined_at
    if joined is not None:
        fields["joined_at"] = joined
        # The portal may learn of the request and the job only after LiveKit's join time (the
        # token path: a join check or ListDispatch read after the agent was in): they happened
        # by the join at the latest, so their stamps never come after it.
        if dispatch.requested_at is not None and dispatch.requested_at > joined:
            fields["requested_at"] = joined
        if dispatch.job_assigned_at is not None and dispatch.job_assigned_at > joined:
            fields["job_assigned_at"] = joined
    if livekit is not None and not dispatch.livekit_dispatch_id:
        fields["livekit_dispatch_id"] = livekit.id
    job_id = (
        participant.identity.removeprefix("agent-") if participant.identity.startswith("agent-AJ_") else ""
    )
    if livekit is not None:
        job_id = next((j.id for j in livekit.jobs if j.participant_identity == participant.identity), job_id)
    if job_id:
        fields["livekit_job_id"] = job_id
        job_assigned_record(
            dispatch=dispatch,
            job_id=job_id,
            how=f"its agent '{participant.identity}' joined",
            at=min(joined, timezone.now()) if joined is not None else None,
        )
    detail = f"agent participant '{participant.identity}' joined" + (f" ({how})" if how else "")
    return dispatch_transition(
        dispatch=dispatch, to=Dispatch.Status.AGENT_JOINED, expect=WAITING_STATUSES, detail=detail, **fields
    )


def job_assigned_record(*, dispatch: Dispatch, job_id: str, how: str, at: datetime | None = None) -> bool:
    """LiveKit shows a job for this dispatch (ListDispatch, or the agent's identity). `at`:
    when the job existed by, when that is known to be earlier than now (its agent's join)."""
    return dispatch_transition(
        dispatch=dispatch,
        to=Dispatch.Status.JOB_ASSIGNED,
        expect=(Dispatch.Status.PENDING, Dispatch.Status.REQUESTED),
        detail=f"job {job_id} assigned to a worker ({how})",
        livekit_job_id=job_id,
        **({"job_assigned_at": at} if at is not None else {}),
    )


def agent_left_record(*, dispatch: Dispatch, error: str, room_closed: bool = False) -> bool | None:
    """The agent's participant is gone. The room closed: `room_closed`. Else a failure to
    repair (self-hosted LiveKit never re-dispatches): the next attempt, the fallback, or
    giving up. None when the dispatch had already moved on; else whether a new attempt began."""
    if room_closed:
        dispatch_transition(
            dispatch=dispatch,
            to=Dispatch.Status.ROOM_CLOSED,
            expect=(Dispatch.Status.AGENT_JOINED,),
            detail=error,
            left_at=timezone.now(),
        )
        return None
    with transaction.atomic():
        if not dispatch_transition(
            dispatch=dispatch,
            to=Dispatch.Status.FAILED,
            expect=(Dispatch.Status.AGENT_JOINED,),
            detail=error,
            last_error=error,
            left_at=timezone.now(),
        ):
            return None
        return dispatch_retry(dispatch=dispatch) is not None


def agent_extra_remove(*, dispatch: Dispatch, identity: str, why: str) -> None:
    """An agent that must not stay (a second agent of one name, a cancelled attempt's agent):
    say why on `dispatch`'s timeline and in its `agents_removed`, and remove it from the room
    (a task, after commit). Said once per identity, however many reports of it arrive."""
    with transaction.atomic():
        row = Dispatch.objects.select_for_update().filter(pk=dispatch.pk).only("agents_removed").first()
        if row is None or any(item.get("identity") == identity for item in row.agents_removed):
            return
        removed = [*row.agents_removed, {"identity": identity, "why": why, "at": timezone.now().isoformat()}]
        Dispatch.objects.filter(pk=dispatch.pk).update(agents_removed=removed)
        dispatch.agents_removed = removed
    dispatch_note(dispatch=dispatch, detail=f"{why}; removing it", level=logging.WARNING)
    metrics.agent_removed_record(agent=dispatch.agent_name)
    participant_remove_enqueue(dispatch_id=dispatch.pk, identity=identity)


def dispatch_deliver_explicitly(*, dispatch: Dispatch, why: str) -> bool:
    """A token-delivered agent LiveKit ignored (the room existed before the token's join):
    the same attempt, now sent by CreateDispatch."""
    with transaction.atomic():
        if not Dispatch.objects.filter(
            pk=dispatch.pk, status=Dispatch.Status.PENDING, delivery=Dispatch.Delivery.TOKEN
        ).update(delivery=Dispatch.Delivery.EXPLICIT, deadline_at=None, updated_at=timezone.now()):
            return False
        dispatch.delivery, dispatch.deadline_at = Dispatch.Delivery.EXPLICIT, None
        dispatch_note(dispatch=dispatch, detail=f"{why}; dispatching explicitly")
        dispatch_request_enqueue(dispatch_id=dispatch.pk)
    return True
