"""The checks that raise and resolve incidents, run by beat (`alerts.evaluate`) and nudged by
the dispatch tasks when a dispatch ends badly (see `signals.py`).

- `dispatch_gave_up:<agent>`: a dispatch ended (no worker, failed, timed out) with no further
  attempt and no fallback; its occurrences count such dispatches since the agent last joined a
  room. Resolved when a later dispatch of that agent has its agent join, or when the agent is
  disabled or deleted (nothing dispatches it any more).
- `livekit`: LiveKit unreachable or refusing the credentials for ALERT_LIVEKIT_DOWN_AFTER_S.
- `reconcile`: ALERT_RECONCILE_FAILURES passes in a row failed.
- `canary:<agent>` (canary.py): the agent's canary failing or slow.

The same pass also sweeps alert deliveries a lost or killed task left behind
(`alerts.deliveries_sweep`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from dispatchportal.reserved import CANARY_ROOM_PREFIX
from livekit_boundary.client import LiveKit, LiveKitAuthRejected, LiveKitError, livekit_run
from rooms_app.models import Dispatch

from .alerts import condition_record, deliveries_sweep, incident_resolve, incident_set

logger = logging.getLogger(__name__)

GAVE_UP_STATUSES = (Dispatch.Status.NO_WORKER, Dispatch.Status.FAILED, Dispatch.Status.TIMED_OUT)
# A failed attempt's re-dispatch is written just after its final transition: a failure this
# young may still get one, so it is judged on the next check.
GIVE_UP_GRACE = timedelta(seconds=2)
LOOKBACK = timedelta(days=1)


def dispatches_check(*, now: datetime | None = None, settled: bool = False) -> None:
    """`settled`: called after the dispatch task finished, so any re-dispatch is written."""
    now = now or timezone.now()
    grace = timedelta(0) if settled else GIVE_UP_GRACE
    gave_up = (
        Dispatch.objects.filter(
            status__in=GAVE_UP_STATUSES,
            ended_at__gt=now - LOOKBACK,
            ended_at__lte=now - grace,
            retries__isnull=True,
        )
        .exclude(room__name__startswith=CANARY_ROOM_PREFIX)
        .values("agent_name")
        .annotate(last=Max("ended_at"))
    )
    last_gave_up = {row["agent_name"]: row["last"] for row in gave_up}
    from .models import Incident

    open_agents = set(
        Incident.objects.filter(kind="dispatch_gave_up", status=Incident.Status.OPEN).values_list(
            "subject", flat=True
        )
    )
    names = set(last_gave_up) | open_agents
    last_joined = dict(
        Dispatch.objects.filter(agent_name__in=names, joined_at__isnull=False)
        .values("agent_name")
        .annotate(last=Max("joined_at"))
        .values_list("agent_name", "last")
    )
    from agents_app.models import Agent

    enabled = set(
        Agent.objects.filter(agent_name__in=names, enabled=True).values_list("agent_name", flat=True)
    )
    for name in names:
        failed_at, joined_at = last_gave_up.get(name), last_joined.get(name)
        key = f"dispatch_gave_up:{name}"
        if name not in enabled:  # disabled or deleted: no dispatch of it will come, or fail
            incident_resolve(key=key, summary=f"agent '{name}' was disabled or deleted", now=now)
            continue
        failing = failed_at is not None and (joined_at is None or failed_at > joined_at)
        recovered = joined_at is not None and (failed_at is None or joined_at > failed_at)
        if not failing and not recovered:
            continue  # open, and nothing has joined since: it stays open
        latest = _latest_gave_up(name) if failing else None
        incident_set(
            failing=failing,
            key=key,
            kind="dispatch_gave_up",
            subject=name,
            summary=(
                f"Dispatch of agent '{name}' gave up in room '{latest.room.name}': {latest.last_error}"
                if latest is not None
                else f"Dispatch of agent '{name}' gave up"
            ),
            resolution=f"agent '{name}' joined a room again",
            detail={"room": latest.room.name, "dispatch_id": latest.pk, "status": latest.status}
            if latest is not None
            else {},
            occurrences=_gave_up_count(name, since=joined_at, now=now) if failing else 1,
            now=now,
        )


def _gave_up_count(agent_name: str, *, since: datetime | None, now: datetime) -> int:
    """Dispatches of the agent that gave up (no further attempt) since it last joined a room,
    within the look-back: the events an open `dispatch_gave_up` incident counts."""
    rows = Dispatch.objects.filter(
        agent_name=agent_name,
        status__in=GAVE_UP_STATUSES,
        retries__isnull=True,
        ended_at__gt=max(since, now - LOOKBACK) if since is not None else now - LOOKBACK,
    ).exclude(room__name__startswith=CANARY_ROOM_PREFIX)
    return max(1, rows.count())


def _latest_gave_up(agent_name: str) -> Dispatch | None:
    return (
        Dispatch.objects.select_related("room")
        .filter(agent_name=agent_name, status__in=GAVE_UP_STATUSES, retries__isnull=True)
        .order_by("-ended_at")
        .first()
    )


def livekit_check(*, now: datetime | None = None) -> None:
    """Ask LiveKit one cheap question; alert when it has failed for long enough."""
    now = now or timezone.now()

    async def probe(client: LiveKit) -> None:
        await client.list_rooms([f"{CANARY_ROOM_PREFIX}probe"])

    error, refused = "", False
    try:
        livekit_run(probe)
    except LiveKitError as exc:
        error, refused = exc.message, isinstance(exc, LiveKitAuthRejected)
    condition = condition_record(key="livekit", ok=not error, error=error, now=now)
    down_for = (now - condition.failing_since).total_seconds() if condition.failing_since else 0.0
    failing = bool(error) and down_for >= settings.ALERT_LIVEKIT_DOWN_AFTER_S
    if error and not failing:
        return  # not long enough yet: neither raise nor resolve
    incident_set(
        failing=failing,
        key="livekit",
        kind="livekit_credentials" if refused else "livekit_unreachable",
        summary=f"LiveKit {'refuses the credentials' if refused else 'unreachable'} for {down_for:.0f} s: {error}",
        resolution="LiveKit answers again",
        detail={"failing_since": condition.failing_since.isoformat() if condition.failing_since else None},
        occurrences=condition.consecutive_failures,
        now=now,
    )


def reconcile_check(*, now: datetime | None = None) -> None:
    from .models import Condition

    condition = Condition.objects.filter(key="reconcile").first()
    if condition is None:
        return
    failing = condition.consecutive_failures >= settings.ALERT_RECONCILE_FAILURES
    if condition.consecutive_failures and not failing:
        return
    incident_set(
        failing=failing,
        key="reconcile",
        kind="reconcile_failing",
        summary=f"Reconcile failed {condition.consecutive_failures} times in a row: {condition.last_error}",
        resolution="a reconcile pass succeeded",
        occurrences=condition.consecutive_failures,
        now=now,
    )


CHECKS = {
    "dispatches": dispatches_check,
    "livekit": livekit_check,
    "reconcile": reconcile_check,
    "deliveries": deliveries_sweep,
}


def alerts_evaluate(
    *, only: Iterable[str] | None = None, now: datetime | None = None, settled: bool = False
) -> list[str]:
    """Run the checks (all, or those named); one failing check does not stop the others."""
    from . import canary

    checks = {**CHECKS, "canaries": canary.canaries_check}
    ran = []
    for name in only or checks:
        try:
            if name == "dispatches":
                dispatches_check(now=now, settled=settled)
            else:
                checks[name](now=now)
        except Exception:  # a bug in one check must not silence the others
            logger.exception("alert check %s failed", name)
            continue
        ran.append(name)
    return ran
