"""The dispatch lifecycle's calls to LiveKit, run by the Celery tasks (and, for the Dispatch
API's first CreateDispatch, by the request itself): CreateDispatch exactly once, DeleteDispatch,
and the join-deadline check that names why an agent is not there and re-dispatches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from livekit_boundary.client import (
    LiveKit,
    LiveKitError,
    LiveKitNotFound,
    LiveKitRejected,
    LiveKitUnavailable,
    LkDispatch,
    LkParticipant,
    livekit_run,
)

from ..models import LIVE_STATUSES, WAITING_STATUSES, Dispatch, Room
from .facts import agents_seen_in
from .jobs import dispatch_deadline_enqueue
from .ledger import (
    DEADLINE_GRACE_S,
    ROOM_FRESH,
    agent_joined_record,
    dispatch_deadline_arm,
    dispatch_deliver_explicitly,
    dispatch_note,
    dispatch_retry,
    dispatch_transition,
    job_assigned_record,
)
from .matching import Verdict, participant_match, session_rows

logger = logging.getLogger(__name__)


# --- talking to LiveKit (run by tasks) -------------------------------------------------------


def _known_livekit_ids(dispatch: Dispatch) -> set[str]:
    """LiveKit dispatch ids the ledger already attributes to other attempts in this room."""
    return set(
        Dispatch.objects.filter(room_id=dispatch.room_id, agent_name=dispatch.agent_name)
        .exclude(pk=dispatch.pk)
        .exclude(livekit_dispatch_id="")
        .values_list("livekit_dispatch_id", flat=True)
    )


def _adoptable(found: Iterable[LkDispatch], dispatch: Dispatch, known: set[str]) -> LkDispatch | None:
    """The LiveKit dispatch that is this ledger row's, when the row has no id yet: one for the
    same agent that no other attempt owns and whose job has not ended. This is what makes a
    retried or duplicated task harmless: its CreateDispatch already happened, so it adopts."""
    for candidate in found:
        if dispatch.livekit_dispatch_id and candidate.id == dispatch.livekit_dispatch_id:
            return candidate
    if dispatch.livekit_dispatch_id:
        return None
    for candidate in found:
        if candidate.agent_name != dispatch.agent_name or candidate.id in known:
            continue
        if candidate.jobs and not any(job.active for job in candidate.jobs):
            continue
        return candidate
    return None


@dataclass(slots=True)
class _RequestOutcome:
    kind: str  # created | adopted | room_gone
    livekit: LkDispatch | None = None


class DispatchInFlight(Exception):
    """Another run of this dispatch's task may be talking to LiveKit right now: try again
    once its lease ends (then it has either recorded its answer or died)."""

    def __init__(self, retry_in_s: float) -> None:
        super().__init__(f"another run holds the request lease for {retry_in_s:.1f} s")
        self.retry_in_s = retry_in_s


def _request_lease(*, calls: int) -> timedelta:
    # Every LiveKit call is bounded by LIVEKIT_TIMEOUT_S, so a run holding the lease has
    # finished (or died) once it ends.
    return timedelta(seconds=float(settings.LIVEKIT_TIMEOUT_S) * calls + 1.0)


def dispatch_request(*, dispatch_id: int, timeout_s: float | None = None) -> str:
    """Send a pending explicit dispatch to LiveKit, exactly once.

    A status guard first (anything but `pending` is work already done), then a lease taken
    with a compare-and-set: only its holder talks to LiveKit. The first try goes straight to
    CreateDispatch (the fast path, one LiveKit round trip); any later try (a retry, a
    redelivered or duplicated task, a reconcile re-queue) first asks ListDispatch and adopts
    the dispatch an earlier try made instead of creating a second agent.
    Raises LiveKitUnavailable or DispatchInFlight for the task to retry; a 4xx ends the row
    as `failed`. `timeout_s` bounds this try's LiveKit calls (the request path's own try is
    short; a try that times out is looked up by the next)."""
    dispatch = Dispatch.objects.select_related("room", "agent").filter(pk=dispatch_id).first()
    if (
        dispatch is None
        or dispatch.status != Dispatch.Status.PENDING
        or dispatch.delivery != Dispatch.Delivery.EXPLICIT
    ):
        return "skipped"
    room = dispatch.room
    # CreateDispatch creates a missing room. The Dispatch API and the token path (the person
    # is about to join) mean to; a re-dispatch, a fallback, or a rule applied to a room that
    # has meanwhile closed must not bring it back.
    room_must_exist = dispatch.previous_id is not None or dispatch.source in (
        Dispatch.Source.RULE,
        Dispatch.Source.RECONCILE,
        Dispatch.Source.FALLBACK,
    )
    now = timezone.now()
    look_up = dispatch.request_tries > 0
    if (
        room_must_exist
        and not look_up
        and dispatch.previous_id is None
        and room.status == Room.Status.ACTIVE
        and room.last_seen_at is not None
        and now - room.last_seen_at < ROOM_FRESH
    ):
        # LiveKit reported the room moments ago (the room_started webhook that made this
        # dispatch): skip asking again, it is a round trip on the webhook -> agent hot path.
        room_must_exist = False
    lease = _request_lease(calls=1 + int(room_must_exist or look_up) + int(look_up))
    claimed = (
        Dispatch.objects.filter(pk=dispatch.pk, status=Dispatch.Status.PENDING)
        .filter(Q(request_lease_until__isnull=True) | Q(request_lease_until__lt=now))
        .update(request_tries=F("request_tries") + 1, request_lease_until=now + lease)
    )
    if not claimed:
        current = Dispatch.objects.filter(pk=dispatch.pk).values("status", "request_lease_until").first()
        if current is None or current["status"] != Dispatch.Status.PENDING:
            return "skipped"
        until = current["request_lease_until"] or now
        raise DispatchInFlight(max(0.1, (until - now).total_seconds()))
    known = _known_livekit_ids(dispatch) if look_up else set()
    return _request_send(
        dispatch=dispatch, room_must_exist=room_must_exist, look_up=look_up, known=known, timeout_s=timeout_s
    )


def dispatch_first_try_claim() -> dict[str, Any]:
    """Fields that record a new explicit dispatch already claimed for its first try (one
    CreateDispatch): its creator then calls `dispatch_request_first` without reading the row
    back or taking the lease in a second write, two database round trips before LiveKit
    hears anything. Any other run sees a try made and the lease held, as after a claim."""
    return {"request_tries": 1, "request_lease_until": timezone.now() + _request_lease(calls=1)}


def dispatch_request_first(*, dispatch: Dispatch, timeout_s: float | None = None) -> str:
    """The first try of a dispatch its creator recorded with `dispatch_first_try_claim()`
    (`dispatch` as created, with its room and agent): straight to CreateDispatch, then as
    `dispatch_request`. Raises as `dispatch_request` does."""
    return _request_send(
        dispatch=dispatch, room_must_exist=False, look_up=False, known=set(), timeout_s=timeout_s
    )


def _request_send(
    *, dispatch: Dispatch, room_must_exist: bool, look_up: bool, known: set[str], timeout_s: float | None
) -> str:
    """The claimed try itself: CreateDispatch (after ListRooms/ListDispatch when asked) and
    what LiveKit answered, recorded."""
    room = dispatch.room

    async def request(client: LiveKit) -> _RequestOutcome:
        exists = bool(await client.list_rooms([room.name])) if room_must_exist or look_up else True
        if room_must_exist and not exists:
            return _RequestOutcome("room_gone")
        # No room, no dispatch to adopt. And the real server's ListDispatch on a room it does
        # not have hangs about 3 s, then answers 503: after a LiveKit restart (rooms lost)
        # asking it would fail every retry of every dispatch.
        if look_up and exists:
            adopted = _adoptable(await client.list_dispatches(room.name), dispatch, known)
            if adopted is not None:
                return _RequestOutcome("adopted", adopted)
        return _RequestOutcome(
            "created",
            await client.create_dispatch(
                room.name,
                dispatch.agent_name,
                dispatch.metadata,
                deployment=dispatch.deployment,
                attributes=dispatch.attributes,
            ),
        )

    try:
        outcome = livekit_run(request, timeout_s=timeout_s)
    except LiveKitUnavailable:
        # This try is over (its outcome unknown): release the lease so the retry need not
        # wait for it; being a later try, the retry looks the dispatch up first.
        Dispatch.objects.filter(pk=dispatch.pk, status=Dispatch.Status.PENDING).update(
            request_lease_until=None
        )
        raise
    except LiveKitRejected as exc:
        dispatch_transition(
            dispatch=dispatch,
            to=Dispatch.Status.FAILED,
            expect=(Dispatch.Status.PENDING,),
            detail=f"LiveKit refused the dispatch: {exc.message}",
            last_error=exc.message,
        )
        return "failed"
    if outcome.kind == "room_gone":
        dispatch_transition(
            dispatch=dispatch,
            to=Dispatch.Status.ROOM_CLOSED,
            expect=(Dispatch.Status.PENDING,),
            detail="the room no longer exists in LiveKit",
        )
        return "room_gone"
    assert outcome.livekit is not None
    found = outcome.livekit
    how = (
        "CreateDispatch answered"
        if outcome.kind == "created"
        else "adopted the LiveKit dispatch already there"
    )
    with transaction.atomic():
        moved = _livekit_has_it(
            dispatch=dispatch,
            found=found,
            detail=f"{how}: {found.id}",
            last_error="",
            livekit_waiting_since=None,
        )
        if moved:
            dispatch_deadline_arm(dispatch=dispatch)
    if not moved:
        # The row moved on while CreateDispatch was in flight. Forward (the agent's
        # participant_joined webhook beat this bookkeeping): just record the id. Ended
        # (cancelled meanwhile): take the dispatch back.
        still_live = Dispatch.objects.filter(pk=dispatch.pk, status__in=LIVE_STATUSES)
        if (
            still_live.filter(livekit_dispatch_id="").update(livekit_dispatch_id=found.id)
            or still_live.exists()
        ):
            return outcome.kind
        if outcome.kind == "created":
            _livekit_delete_quietly(room_name=room.name, livekit_id=found.id)
        return "ended meanwhile"
    return outcome.kind


def _livekit_has_it(*, dispatch: Dispatch, found: LkDispatch, detail: str, **fields: Any) -> bool:
    """pending -> requested with LiveKit's dispatch id, then the job if ListDispatch shows one
    (only ListDispatch shows a job: no webhook does). A token's agent was requested when
    LiveKit created its dispatch from the token (found.created_at), not when the portal saw it."""
    if (
        dispatch.delivery == Dispatch.Delivery.TOKEN
        and found.created_at is not None
        and "requested_at" not in fields
    ):
        room = dispatch._state.fields_cache.get("room")
        started = room.started_at if room is not None else None
        # Never before the session began: sessions are told apart by when LiveKit took a dispatch.
        at = max(found.created_at, started) if started is not None else found.created_at
        fields["requested_at"] = min(at, timezone.now())
    moved = dispatch_transition(
        dispatch=dispatch,
        to=Dispatch.Status.REQUESTED,
        expect=(Dispatch.Status.PENDING,),
        detail=detail,
        livekit_dispatch_id=found.id,
        **fields,
    )
    job = next((j for j in found.jobs if j.active), None)
    if moved and job is not None:
        job_assigned_record(dispatch=dispatch, job_id=job.id, how=f"{job.status}, ListDispatch")
    return moved


def dispatch_unavailable_note(*, dispatch_id: int, error: str, retry: int) -> None:
    """A LiveKit outage while a dispatch waits to be sent: not a verdict on the agent. The row
    stays `pending`, marked as waiting for LiveKit since the first failed try (the room API
    and the doctor show it); its timeline notes the first three tries and every tenth."""
    now = timezone.now()
    dispatch = Dispatch.objects.filter(pk=dispatch_id, status=Dispatch.Status.PENDING).first()
    if dispatch is None:
        return
    Dispatch.objects.filter(pk=dispatch_id, livekit_waiting_since__isnull=True).update(
        livekit_waiting_since=now
    )
    Dispatch.objects.filter(pk=dispatch_id).update(last_error=error, updated_at=now)
    if retry <= 3 or retry % 10 == 0:
        dispatch_note(
            dispatch=dispatch,
            detail=f"LiveKit unavailable ({error}); waiting for it: try {retry} failed, trying again with backoff",
            level=logging.WARNING,
        )


def _livekit_delete_quietly(*, room_name: str, livekit_id: str) -> bool:
    try:
        livekit_run(lambda client: client.delete_dispatch(room_name, livekit_id))
    except LiveKitNotFound:
        return True
    except LiveKitError as exc:
        logger.warning(
            "could not delete LiveKit dispatch %s: %s", livekit_id, exc.message, extra={"room": room_name}
        )
        return False
    return True


def dispatch_remove(*, dispatch_id: int) -> str:
    """Remove a cancelled (or failed) dispatch from LiveKit, which removes its agent.
    Raises LiveKitUnavailable for the task to retry."""
    dispatch = Dispatch.objects.select_related("room").filter(pk=dispatch_id).first()
    if dispatch is None or dispatch.is_live:
        return "skipped"
    room = dispatch.room
    known = _known_livekit_ids(dispatch)

    async def remove(client: LiveKit) -> str:
        target = dispatch.livekit_dispatch_id
        if not target:
            # A token dispatch: LiveKit made it, the ledger never learnt its id.
            found = _adoptable(await client.list_dispatches(room.name), dispatch, known)
            if found is None:
                return ""
            target = found.id
        try:
            await client.delete_dispatch(room.name, target)
        except LiveKitNotFound:
            return target + " (already gone)"
        return target

    removed = livekit_run(remove)
    if removed:
        dispatch_note(dispatch=dispatch, detail=f"LiveKit dispatch {removed} deleted")
    return removed or "nothing to delete"


def agent_participant_remove(*, dispatch_id: int, identity: str) -> str:
    """RemoveParticipant for an agent that must not stay in the room: a second agent of one
    name, or the agent of a cancelled attempt. Skipped when the agent has meanwhile become
    this live dispatch's own. Raises LiveKitUnavailable for the task to retry."""
    dispatch = Dispatch.objects.select_related("room").filter(pk=dispatch_id).first()
    if dispatch is None or (dispatch.is_live and dispatch.participant_identity == identity):
        return "skipped"
    try:
        livekit_run(lambda client: client.remove_participant(dispatch.room.name, identity))
    except LiveKitNotFound:
        dispatch_note(dispatch=dispatch, detail=f"agent participant '{identity}' had already left")
        return "gone"
    except LiveKitRejected as exc:
        dispatch_note(
            dispatch=dispatch,
            detail=f"LiveKit refused to remove agent participant '{identity}': {exc.message}",
            level=logging.ERROR,
        )
        return "refused"
    dispatch_note(dispatch=dispatch, detail=f"agent participant '{identity}' removed from the room")
    return "removed"


def assignment_window() -> timedelta:
    """How long after CreateDispatch LiveKit may still be offering the job to workers with no
    job in ListDispatch: the real server's availability timeout is 10 s, and it lists a job
    about 5 s after the worker accepted it (seen with livekit-server 1.13.5)."""
    return timedelta(seconds=float(getattr(settings, "DISPATCH_ASSIGNMENT_WINDOW_S", 10.0)))


def _deadline_later(
    dispatch: Dispatch, jobs: tuple[Any, ...], *, room: Room, now: Any
) -> tuple[Any, str] | None:
    """A later deadline when judging now would be premature, with why; None to judge now.

    - An active job: its agent gets the join deadline counted from the job's assignment (a
      cold job process can take seconds before it joins).
    - No job yet, within the assignment window of the request: LiveKit may still be
      assigning it. Judging now and dispatching again would bring two agents (a worker drops
      the termination of a job still waiting for its process)."""
    deadline_s = dispatch.agent.join_deadline_s if dispatch.agent else 15
    if any(job.active for job in jobs):
        assigned = dispatch.job_assigned_at or now
        later = assigned + timedelta(seconds=deadline_s)
        why = f"its job is assigned; the agent has {deadline_s} s from the job's assignment to join"
    elif not jobs:
        asked = dispatch.requested_at
        if asked is None and dispatch.delivery == Dispatch.Delivery.TOKEN:
            asked = room.started_at
        window = assignment_window()
        later = (asked or dispatch.created_at) + window
        why = (
            f"no job yet, but LiveKit may still be offering it to a worker (up to "
            f"{window.total_seconds():g} s after the request)"
        )
    else:
        return None
    if (
        dispatch.deadline_at is None
        or later <= dispatch.deadline_at + timedelta(seconds=0.05)
        or later <= now
    ):
        return None
    return later, why


@dataclass(slots=True)
class _Snapshot:
    room_exists: bool
    participants: list[LkParticipant]
    dispatches: list[LkDispatch]


def _agent_participant(
    dispatch: Dispatch, participants: Iterable[LkParticipant], job_identities: set[str]
) -> LkParticipant | None:
    """This dispatch's agent in the room: a participant of one of its jobs, else the one the
    shared matcher gives this row (never a cancelled attempt's agent, nor a second one)."""
    agents = sorted(
        (p for p in participants if p.is_agent),
        key=lambda p: (p.joined_at is None, p.joined_at or timezone.now()),
    )
    for participant in agents:
        if participant.identity in job_identities:
            return participant
    rows = session_rows(room=dispatch.room)
    present = {p.identity for p in agents}
    for participant in agents:
        match = participant_match(participant=participant, rows=rows, present=present)
        if (
            match.verdict is Verdict.JOINED
            and match.dispatch is not None
            and match.dispatch.pk == dispatch.pk
        ):
            return participant
    return None


def dispatch_deadline_check(*, dispatch_id: int) -> str:
    """The join deadline passed: is the agent there? If not, say why (no_worker, failed,
    timed_out), delete the LiveKit dispatch and re-dispatch (then the fallback, then give up).
    Raises LiveKitUnavailable for the task to retry."""
    dispatch = Dispatch.objects.select_related("room", "agent").filter(pk=dispatch_id).first()
    if dispatch is None or dispatch.status not in WAITING_STATUSES or dispatch.deadline_at is None:
        return "skipped"
    now = timezone.now()
    if dispatch.deadline_at > now + timedelta(seconds=0.05):
        # Ran early (the deadline was moved, or an ETA message was redelivered).
        dispatch_deadline_enqueue(
            dispatch_id=dispatch.pk,
            countdown=(dispatch.deadline_at - now).total_seconds() + DEADLINE_GRACE_S,
        )
        return "rescheduled"
    room = dispatch.room
    known = _known_livekit_ids(dispatch)

    async def look(client: LiveKit) -> _Snapshot:
        rooms = await client.list_rooms([room.name])
        if not rooms:
            return _Snapshot(False, [], [])
        return _Snapshot(
            True, await client.list_participants(room.name), await client.list_dispatches(room.name)
        )

    snapshot = livekit_run(look)
    agents_seen_in(
        room_name=room.name,
        how="deadline check",
        participants=snapshot.participants,
        dispatches=snapshot.dispatches,
    )
    if not snapshot.room_exists:
        if dispatch.delivery == Dispatch.Delivery.TOKEN and room.status != Room.Status.ACTIVE:
            # Nobody has joined with the token yet: the deadline starts again with the room.
            Dispatch.objects.filter(pk=dispatch.pk, status=Dispatch.Status.PENDING).update(deadline_at=None)
            return "waiting for the room"
        dispatch_transition(
            dispatch=dispatch,
            to=Dispatch.Status.ROOM_CLOSED,
            expect=WAITING_STATUSES,
            detail="the room no longer exists in LiveKit",
        )
        return Dispatch.Status.ROOM_CLOSED
    ours = _adoptable(snapshot.dispatches, dispatch, known)
    jobs = ours.jobs if ours is not None else ()
    participant = _agent_participant(dispatch, snapshot.participants, {j.participant_identity for j in jobs})
    deadline_s = dispatch.agent.join_deadline_s if dispatch.agent else "?"
    if participant is not None:
        agent_joined_record(
            dispatch=dispatch, participant=participant, livekit=ours, how="found in the room at the deadline"
        )
        return Dispatch.Status.AGENT_JOINED
    if ours is not None:
        later = _deadline_later(dispatch, jobs, room=room, now=now)
        if later is not None:
            when, why = later
            active = next((j for j in jobs if j.active), None)
            with transaction.atomic():
                if active is not None and dispatch.status == Dispatch.Status.REQUESTED:
                    job_assigned_record(
                        dispatch=dispatch, job_id=active.id, how=f"{active.status}, ListDispatch"
                    )
                if not Dispatch.objects.filter(pk=dispatch.pk, status__in=WAITING_STATUSES).update(
                    deadline_at=when
                ):
                    return "skipped"
                dispatch.deadline_at = when
                dispatch_note(
                    dispatch=dispatch,
                    detail=f"join deadline moved {(when - now).total_seconds():.1f} s later: {why}",
                )
                dispatch_deadline_enqueue(
                    dispatch_id=dispatch.pk, countdown=(when - now).total_seconds() + DEADLINE_GRACE_S
                )
            return "deadline moved"
    if ours is None:
        if dispatch.delivery == Dispatch.Delivery.TOKEN:
            # LiveKit applies a token's agents only when that join creates the room: the room
            # already existed, so deliver the agent explicitly (not a new attempt).
            dispatch_deliver_explicitly(
                dispatch=dispatch,
                why="LiveKit has no dispatch for the token's agent at its deadline (the room existed "
                "before the token's join, so LiveKit ignored its agents)",
            )
            return "converted to explicit"
        to, error = Dispatch.Status.FAILED, f"LiveKit has no dispatch for '{dispatch.agent_name}' any more"
    else:
        failed = [j for j in jobs if j.status == "failed"]
        if not jobs:
            to = Dispatch.Status.NO_WORKER
            error = f"no worker registered as '{dispatch.agent_name}' took the job within {deadline_s} s"
        elif failed and not any(j.active for j in jobs):
            to, error = (
                Dispatch.Status.FAILED,
                f"job {failed[-1].id} failed: {failed[-1].error or 'no error given'}",
            )
        elif not any(j.active for j in jobs):
            # The agent came and went between webhooks (or they were lost).
            to = Dispatch.Status.FAILED
            error = f"job {jobs[-1].id} ended ({jobs[-1].status}) and its participant is not in the room"
        else:
            job = jobs[-1]
            to = Dispatch.Status.TIMED_OUT
            error = (
                f"job {job.id} was {job.status} but its participant '{job.participant_identity}' "
                f"did not join within {deadline_s} s"
            )
    with transaction.atomic():
        fields: dict[str, Any] = {"last_error": error}
        if ours is not None and not dispatch.livekit_dispatch_id:
            fields["livekit_dispatch_id"] = ours.id
        if jobs:
            fields["livekit_job_id"] = jobs[-1].id
        if not dispatch_transition(dispatch=dispatch, to=to, expect=WAITING_STATUSES, detail=error, **fields):
            return "skipped"
    if ours is not None and _livekit_delete_quietly(room_name=room.name, livekit_id=ours.id):
        dispatch_note(dispatch=dispatch, detail=f"LiveKit dispatch {ours.id} deleted")
    with transaction.atomic():
        dispatch_retry(dispatch=dispatch)
    return to


def dispatch_token_join_check(*, dispatch_id: int, identity: str) -> str:
    """The participant whose token carried this agent joined: did that join create the room?
    LiveKit shows a dispatch for the agent if it did (it honoured the token); if not, the room
    was created by someone else after the token was minted and LiveKit ignored the token's
    agents, so the agent is dispatched explicitly now rather than at its join deadline.
    Raises LiveKitUnavailable for the task to retry."""
    dispatch = Dispatch.objects.select_related("room").filter(pk=dispatch_id).first()
    if (
        dispatch is None
        or dispatch.status != Dispatch.Status.PENDING
        or dispatch.delivery != Dispatch.Delivery.TOKEN
    ):
        return "skipped"
    known = _known_livekit_ids(dispatch)
    found = livekit_run(lambda client: client.list_dispatches(dispatch.room.name))
    agents_seen_in(room_name=dispatch.room.name, how="join check", dispatches=found)
    ours = _adoptable(found, dispatch, known)
    if ours is None:
        moved = dispatch_deliver_explicitly(
            dispatch=dispatch,
            why=f"'{identity}' joined a room that already existed (created after the token was minted), "
            "so LiveKit ignored the token's agents",
        )
        return "converted to explicit" if moved else "skipped"
    with transaction.atomic():
        _livekit_has_it(
            dispatch=dispatch,
            found=ours,
            detail=f"LiveKit dispatched it from the token of '{identity}': {ours.id}",
        )
    return Dispatch.Status.REQUESTED
