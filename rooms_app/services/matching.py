"""Which dispatch an agent participant in a room belongs to: the one decision the webhooks,
reconcile and the join-deadline check all use, so they never disagree about an agent.

Precedence, first match wins:
1. the row that recorded this participant, or its job (`agent-AJ_…` names the job):
   a cancelled row's agent is `CANCELLED` (to be removed), a live row's is `JOINED`;
2. the live row of its agent name: `JOINED` when that row has no other agent present,
   `DUPLICATE` when it has (a second agent of one name, to be removed);
3. no live row, and the newest row of the name in this room session was cancelled: the
   participant is the cancelled attempt's agent (its join was reported late): `CANCELLED`;
4. otherwise `NEW`: an agent the ledger has no row for (adopted if the portal manages it).

An ended attempt that was not cancelled (timed out, failed, superseded) does not own its agent
any more: the agent counts for the live attempt of its name, or is new.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from django.db.models import Q

from livekit_boundary.client import LkParticipant

from ..models import LIVE_STATUSES, Dispatch, Room


class Verdict(StrEnum):
    JOINED = "joined"
    DUPLICATE = "duplicate"
    CANCELLED = "cancelled"
    NEW = "new"


@dataclass(frozen=True, slots=True)
class Match:
    verdict: Verdict
    dispatch: Dispatch | None = None


def job_id_of(identity: str) -> str:
    """The job a default agent identity names (`agent-AJ_x` -> `AJ_x`), else ""."""
    return identity.removeprefix("agent-") if identity.startswith("agent-AJ_") else ""


def participant_match(
    *,
    participant: LkParticipant,
    rows: Sequence[Dispatch],
    present: Collection[str] | None = None,
    claimed: Mapping[int, str] | None = None,
) -> Match:
    """Match one agent participant against this room session's rows (newest first).

    `present`: the identities LiveKit lists in the room now (None: not known, so a row's
    recorded agent is taken to be there). `claimed`: identities already matched to rows
    earlier in the same pass (row id -> identity), which override what the rows recorded."""
    claimed = claimed or {}

    def agent_of(row: Dispatch) -> str:
        return claimed.get(row.pk, row.participant_identity)

    job_id = job_id_of(participant.identity)
    for row in rows:
        if agent_of(row) == participant.identity or (job_id and row.livekit_job_id == job_id):
            if row.status == Dispatch.Status.CANCELLED:
                return Match(Verdict.CANCELLED, row)
            if row.status in LIVE_STATUSES:
                return Match(Verdict.JOINED, row)
    name = participant.agent_name
    if name is None:
        return Match(Verdict.NEW)
    same_name = [row for row in rows if row.agent_name == name]
    live = next((row for row in same_name if row.status in LIVE_STATUSES), None)
    if live is not None:
        current = agent_of(live)
        held = live.status == Dispatch.Status.AGENT_JOINED or live.pk in claimed
        if held and current and current != participant.identity and (present is None or current in present):
            return Match(Verdict.DUPLICATE, live)
        return Match(Verdict.JOINED, live)
    if same_name and same_name[0].status == Dispatch.Status.CANCELLED:
        return Match(Verdict.CANCELLED, same_name[0])
    return Match(Verdict.NEW)


def session_rows(*, room: Room) -> list[Dispatch]:
    """The room's dispatch rows of its current session, newest first: live ones, and those
    made or ended since the session began (an API dispatch is recorded just before its
    CreateDispatch creates the room, and is cancelled after)."""
    rows = Dispatch.objects.filter(room=room).select_related("agent").order_by("-id")
    if room.started_at is not None:
        start = room.started_at
        rows = rows.filter(Q(status__in=LIVE_STATUSES) | Q(created_at__gte=start) | Q(ended_at__gte=start))
    return list(rows)
