"""Celery tasks of the dispatch lifecycle.

Each task takes ids, loads its row and calls one service whose status guard makes a second
run harmless, which is why they are `acks_late` with `reject_on_worker_lost`: a worker killed
mid-task gets the task redelivered, and the redelivery adopts whatever the first run already
did in LiveKit instead of doing it twice. (`token_facts_apply` takes nothing: it applies
every token fact not yet applied, each at most once.)

Only named transient errors are retried (LiveKit unreachable, timing out or answering 5xx;
the database being briefly locked), with exponential backoff, jitter and a bound. LiveKit
refusing a request (4xx) is a final answer, recorded by the service.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from . import reconcile, services
from .livekit_client import LiveKitUnavailable

logger = logging.getLogger(__name__)
# The database connection dropped (PostgreSQL restarted, a backend terminated, a failover):
# the task's transaction rolled back, and Celery's Django fix-up opens a new connection for
# the retry.
DATABASE_DROPPED = (OperationalError, InterfaceError)


def backoff_s(retries: int) -> float:
    """Exponential backoff with equal jitter: half the step fixed, half random, so retries
    of many dispatches after one outage do not arrive at LiveKit in lockstep."""
    base = float(getattr(settings, "DISPATCH_RETRY_BACKOFF_S", 1.0))
    cap = float(getattr(settings, "DISPATCH_RETRY_BACKOFF_MAX_S", 60.0))
    step = min(cap, base * (2**retries))
    return step / 2 + random.uniform(0, step / 2)


def max_retries() -> int:
    return int(getattr(settings, "DISPATCH_MAX_RETRIES", 8))


class LifecycleTask(Task):
    acks_late = True
    reject_on_worker_lost = True
    soft_time_limit = 30
    time_limit = 45
    # Retries are decided per task with the settings above, not by Celery's default.
    max_retries = None


def _retry(task: Task, exc: Exception, *, what: str, dispatch_id: int | None = None) -> Any:
    retries = task.request.retries
    if retries >= max_retries():
        logger.error(
            "%s: LiveKit still unavailable after %d retries: %s",
            what,
            retries,
            exc,
            extra={"dispatch_id": dispatch_id},
        )
        return None
    countdown = backoff_s(retries)
    logger.warning(
        "%s: %s; retry %d in %.1f s", what, exc, retries + 1, countdown, extra={"dispatch_id": dispatch_id}
    )
    raise task.retry(exc=exc, countdown=countdown, max_retries=None)


@shared_task(bind=True, base=LifecycleTask, name="rooms.dispatch_request")
def dispatch_request(self: Task, dispatch_id: int) -> str | None:
    """CreateDispatch for a pending explicit dispatch (or adopt the one already made)."""
    try:
        return services.dispatch_request(dispatch_id=dispatch_id)
    except services.DispatchInFlight as exc:
        # Not a failure: a duplicate of this task is mid-call; look again when its lease ends.
        raise self.retry(exc=exc, countdown=exc.retry_in_s, max_retries=None) from None
    except LiveKitUnavailable as exc:
        if self.request.retries >= max_retries():
            services.dispatch_unavailable_give_up(
                dispatch_id=dispatch_id, error=exc.message, tries=self.request.retries + 1
            )
            return "failed"
        services.dispatch_unavailable_note(
            dispatch_id=dispatch_id, error=exc.message, retry=self.request.retries + 1
        )
        return _retry(self, exc, what="dispatch_request", dispatch_id=dispatch_id)
    except DATABASE_DROPPED as exc:
        return _retry(self, exc, what="dispatch_request", dispatch_id=dispatch_id)


@shared_task(bind=True, base=LifecycleTask, name="rooms.dispatch_deadline")
def dispatch_deadline(self: Task, dispatch_id: int) -> str | None:
    """The agent's join deadline passed: joined, or why not, and what next."""
    try:
        return services.dispatch_deadline_check(dispatch_id=dispatch_id)
    except LiveKitUnavailable as exc:
        # Given up here, the reconcile pass re-checks overdue dispatches later.
        return _retry(self, exc, what="dispatch_deadline", dispatch_id=dispatch_id)
    except DATABASE_DROPPED as exc:
        return _retry(self, exc, what="dispatch_deadline", dispatch_id=dispatch_id)


@shared_task(bind=True, base=LifecycleTask, name="rooms.dispatch_remove")
def dispatch_remove(self: Task, dispatch_id: int) -> str | None:
    """DeleteDispatch for a cancelled dispatch (removes its agent from the room)."""
    try:
        return services.dispatch_remove(dispatch_id=dispatch_id)
    except (LiveKitUnavailable, *DATABASE_DROPPED) as exc:
        return _retry(self, exc, what="dispatch_remove", dispatch_id=dispatch_id)


@shared_task(bind=True, base=LifecycleTask, name="rooms.dispatch_token_check")
def dispatch_token_check(self: Task, dispatch_id: int, identity: str) -> str | None:
    """The token's participant joined: did LiveKit honour the token's agents?"""
    try:
        return services.dispatch_token_join_check(dispatch_id=dispatch_id, identity=identity)
    except LiveKitUnavailable as exc:  # given up here, the join deadline still converts it
        return _retry(self, exc, what="dispatch_token_check", dispatch_id=dispatch_id)


@shared_task(bind=True, base=LifecycleTask, name="rooms.token_facts_apply")
def token_facts_apply(self: Task) -> int | None:
    """Apply the token facts the token path recorded (scheduled by the first token of each
    window; every reconcile pass sweeps as well)."""
    try:
        return services.token_facts_apply()
    except OperationalError as exc:  # SQLite busy, a PostgreSQL failover: transient
        return _retry(self, exc, what="token_facts_apply")


@shared_task(bind=True, base=LifecycleTask, name="rooms.reconcile", soft_time_limit=240, time_limit=300)
def reconcile_run(self: Task) -> dict[str, Any]:
    """The periodic pass (django-celery-beat, editable in admin). No retry: the next pass
    comes soon, and a pass already running holds the lock."""
    return reconcile.reconcile_run().as_dict()
