"""Celery tasks of the dispatch lifecycle.

Each dispatch task takes a dispatch id (`dispatch_token_check` also the joining identity),
loads its row and calls one service whose status guard makes a second run harmless, which is
why they are `acks_late` with `reject_on_worker_lost`: a worker killed mid-task gets the task
redelivered, and the redelivery adopts whatever the first run already did in LiveKit instead
of doing it twice. `token_facts_apply` and `reconcile_run` take nothing: the first applies
every token fact not yet applied, each at most once; the second is the periodic pass.

Only named transient errors are retried (each task's `autoretry_for`: LiveKit unreachable,
timing out or answering 5xx; the database dropped or briefly locked), with exponential
backoff and full jitter. LiveKit being unreachable is retried without a bound (an outage is
not a verdict on the agent: the work waits for LiveKit, with the backoff capped at
DISPATCH_RETRY_BACKOFF_MAX_S); other errors are bounded by DISPATCH_MAX_RETRIES, past which the
task fails with the error. LiveKit refusing a request (4xx) is a final answer, recorded by the
service.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Retry
from django.conf import settings
from django.db import InterfaceError, OperationalError

from livekit_boundary.client import LiveKitUnavailable

from . import reconcile, services

logger = logging.getLogger(__name__)
# The database connection dropped (PostgreSQL restarted, a backend terminated, a failover):
# the task's transaction rolled back, and Celery's Django fix-up opens a new connection for
# the retry.
DATABASE_DROPPED = (OperationalError, InterfaceError)
LIVEKIT_OR_DATABASE_DOWN = (LiveKitUnavailable, *DATABASE_DROPPED)


def backoff_s(retries: int) -> float:
    """Exponential backoff with full jitter (Celery's `retry_jitter`): anywhere from 0 to the
    step, so retries of many dispatches after one outage do not arrive at LiveKit in lockstep."""
    base = float(getattr(settings, "DISPATCH_RETRY_BACKOFF_S", 1.0))
    cap = float(getattr(settings, "DISPATCH_RETRY_BACKOFF_MAX_S", 60.0))
    return random.uniform(0, min(cap, base * (2 ** min(retries, 32))))


def max_retries() -> int:
    return int(getattr(settings, "DISPATCH_MAX_RETRIES", 8))


class LifecycleTask(Task):
    """Each task names its transient errors in Celery's `autoretry_for`; Celery retries them
    and, past `max_retries`, fails the task with the error.

    Celery's `retry_backoff`, `retry_backoff_max` and `max_retries` options are fixed when the
    task class is created and its backoff is in whole seconds (at least 1), while the DISPATCH_*
    settings are read at each retry (tests change them with the `settings` fixture and set
    0.2 s): so `retry()` below fills in the countdown and the bound from them instead."""

    acks_late = True
    reject_on_worker_lost = True
    soft_time_limit = 30
    time_limit = 45
    # No bound of the class's own: `retry()` passes DISPATCH_MAX_RETRIES unless told otherwise.
    max_retries = None

    def retry(self, *args: Any, countdown: float | None = None, **options: Any) -> Retry:
        """Celery's retry, after `backoff_s` and bounded by DISPATCH_MAX_RETRIES unless the
        caller passes `countdown` or `max_retries` (`None`: no bound)."""
        retries = self.request.retries
        if countdown is None:
            countdown = backoff_s(retries)
        if isinstance(options.get("exc"), LiveKitUnavailable):
            options.setdefault("max_retries", None)  # wait for LiveKit, however long it is down
        bound = options.setdefault("max_retries", max_retries())
        if bound is None or retries < bound:
            logger.warning(
                "%s: %s; retry %d in %.1f s", self.name, options.get("exc"), retries + 1, countdown
            )
        return super().retry(*args, countdown=countdown, **options)


@shared_task(bind=True, base=LifecycleTask, name="rooms.dispatch_request", autoretry_for=DATABASE_DROPPED)
def dispatch_request(self: Task, dispatch_id: int) -> str:
    """CreateDispatch for a pending explicit dispatch (or adopt the one already made)."""
    try:
        return services.dispatch_request(dispatch_id=dispatch_id)
    except services.DispatchInFlight as exc:
        # Not a failure: a duplicate of this task is mid-call; look again when its lease ends.
        raise self.retry(exc=exc, countdown=exc.retry_in_s, max_retries=None) from None
    except LiveKitUnavailable as exc:
        # Never a reason to give up: the row waits (visibly) until LiveKit answers.
        services.dispatch_unavailable_note(
            dispatch_id=dispatch_id, error=exc.message, retry=self.request.retries + 1
        )
        raise self.retry(exc=exc) from exc


# Given up, the reconcile pass re-checks overdue dispatches later.
@shared_task(base=LifecycleTask, name="rooms.dispatch_deadline", autoretry_for=LIVEKIT_OR_DATABASE_DOWN)
def dispatch_deadline(dispatch_id: int) -> str:
    """The agent's join deadline passed: joined, or why not, and what next."""
    return services.dispatch_deadline_check(dispatch_id=dispatch_id)


@shared_task(base=LifecycleTask, name="rooms.dispatch_remove", autoretry_for=LIVEKIT_OR_DATABASE_DOWN)
def dispatch_remove(dispatch_id: int) -> str:
    """DeleteDispatch for a cancelled dispatch (removes its agent from the room)."""
    return services.dispatch_remove(dispatch_id=dispatch_id)


@shared_task(base=LifecycleTask, name="rooms.participant_remove", autoretry_for=LIVEKIT_OR_DATABASE_DOWN)
def participant_remove(dispatch_id: int, identity: str) -> str:
    """RemoveParticipant for an agent that must not stay: a second agent of one name, or the
    agent of a cancelled attempt."""
    return services.agent_participant_remove(dispatch_id=dispatch_id, identity=identity)


# Given up, the join deadline still converts the dispatch.
@shared_task(base=LifecycleTask, name="rooms.dispatch_token_check", autoretry_for=(LiveKitUnavailable,))
def dispatch_token_check(dispatch_id: int, identity: str) -> str:
    """The token's participant joined: did LiveKit honour the token's agents?"""
    return services.dispatch_token_join_check(dispatch_id=dispatch_id, identity=identity)


# SQLite busy, a PostgreSQL failover: transient.
@shared_task(base=LifecycleTask, name="rooms.token_facts_apply", autoretry_for=(OperationalError,))
def token_facts_apply() -> int:
    """Apply the token facts the token path recorded (scheduled by the first token of each
    window; every reconcile pass sweeps as well)."""
    return services.token_facts_apply()


@shared_task(base=LifecycleTask, name="rooms.webhook_events_apply", autoretry_for=(OperationalError,))
def webhook_events_apply(shard: int | None = None) -> int:
    """Apply one shard's webhook events the webhook endpoint recorded (sent by it; every
    reconcile pass sweeps every shard as well, and so does a task sent with no shard)."""
    return services.webhook_events_apply(shard=shard)


@shared_task(bind=True, base=LifecycleTask, name="rooms.reconcile", soft_time_limit=240, time_limit=300)
def reconcile_run(self: Task) -> dict[str, Any]:
    """The periodic pass (django-celery-beat, editable in admin). No retry: the next pass
    comes soon, and a pass already running holds the lock."""
    return reconcile.reconcile_run().as_dict()
