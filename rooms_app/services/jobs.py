"""The background jobs the services ask for, one typed function per job.

The Celery tasks (`rooms_app.tasks`) call the services, so the services must not import the
tasks back: that would be an import cycle, and naming a task by a string would let a typo
through until it ran. Instead this module is the services' side of the hand-off: it declares
which jobs exist (`Tasks`), and `RoomsAppConfig.ready()` binds the Celery task objects into
it once the apps are loaded. The dependency then only points one way: tasks -> services.

Every function sends its job once the current transaction commits (at once outside one), so
the worker always finds the rows it is given, except `token_facts_apply_enqueue`, which is
sent at once (it carries no row). A broker failure is logged, not raised. The reconcile pass
re-sends some of what was lost: a CreateDispatch for an explicit dispatch left `pending`
(`STALE_PENDING_S`), an overdue join-deadline check, and the application of token facts and
webhook events. A lost
`dispatch_remove`, `dispatch_token_check` or `participant_remove` is not re-sent: the join
deadline still converts a token dispatch LiveKit ignored, but a cancelled dispatch's LiveKit
dispatch stays until its room ends, and a second agent stays until reconcile finds it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from django.db import transaction

from dispatchportal.redis import BROKER_ERRORS

logger = logging.getLogger(__name__)


class Sendable(Protocol):
    """What the services need of a Celery task: sending it (and its name, for the logs)."""

    name: str

    def apply_async(self, args: Any = ..., kwargs: Any = ..., **options: Any) -> Any: ...


@dataclass(frozen=True, kw_only=True)
class Tasks:
    """The Celery tasks behind the jobs (bound by `RoomsAppConfig.ready()`)."""

    dispatch_request: Sendable
    dispatch_deadline: Sendable
    dispatch_remove: Sendable
    dispatch_token_check: Sendable
    token_facts_apply: Sendable
    participant_remove: Sendable
    webhook_events_apply: Sendable


_tasks: Tasks | None = None


def tasks_bind(*, tasks: Tasks) -> None:
    global _tasks
    _tasks = tasks


def _bound() -> Tasks:
    if _tasks is None:
        raise RuntimeError("rooms_app jobs are not bound: RoomsAppConfig.ready() binds them")
    return _tasks


def _send(task: Sendable, *args: Any, countdown: float | None = None) -> None:
    try:
        task.apply_async(args=args, countdown=countdown, retry=False)
    except BROKER_ERRORS:  # a broker outage must not fail the work that asked for the job
        logger.warning(
            "could not enqueue %s%r; the reconcile pass will catch up", task.name, args, exc_info=True
        )


def _send_on_commit(task: Sendable, *args: Any, countdown: float | None = None) -> None:
    transaction.on_commit(lambda: _send(task, *args, countdown=countdown))


def dispatch_request_enqueue(*, dispatch_id: int, countdown: float | None = None) -> None:
    """CreateDispatch for a pending explicit dispatch (`countdown`: as the retry path of a
    request that makes its own first try)."""
    _send_on_commit(_bound().dispatch_request, dispatch_id, countdown=countdown)


def dispatch_deadline_enqueue(*, dispatch_id: int, countdown: float | None = None) -> None:
    """The join-deadline check, `countdown` seconds from now."""
    _send_on_commit(_bound().dispatch_deadline, dispatch_id, countdown=countdown)


def dispatch_remove_enqueue(*, dispatch_id: int) -> None:
    """DeleteDispatch for a cancelled dispatch."""
    _send_on_commit(_bound().dispatch_remove, dispatch_id)


def dispatch_token_check_enqueue(*, dispatch_id: int, identity: str) -> None:
    """The token's participant joined: did LiveKit honour the token's agents?"""
    _send_on_commit(_bound().dispatch_token_check, dispatch_id, identity)


def participant_remove_enqueue(*, dispatch_id: int, identity: str) -> None:
    """RemoveParticipant for an agent that must not stay (a duplicate, a cancelled attempt's)."""
    _send_on_commit(_bound().participant_remove, dispatch_id, identity)


def webhook_events_apply_enqueue(*, shard: int) -> None:
    """Apply one shard's recorded webhook events (sent by the request that recorded one, after
    its commit)."""
    _send(_bound().webhook_events_apply, shard)


def token_facts_apply_enqueue(*, countdown: float) -> None:
    """Apply the recorded token facts `countdown` seconds from now. Sent at once: it carries
    no row for the worker to find."""
    _send(_bound().token_facts_apply, countdown=countdown)
