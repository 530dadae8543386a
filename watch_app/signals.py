"""Observe the dispatch portal's own Celery tasks without touching their code:

- a reconcile pass's outcome is recorded (the `reconcile` alert counts failures in a row);
- a dispatch task that ended an attempt badly nudges the dispatch check at once, so a
  give-up is alerted within seconds instead of at the next beat;
- an agent saved disabled nudges the dispatch and canary checks, so its incidents resolve at
  once rather than at the next beat.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_failure, task_postrun
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from agents_app.models import Agent
from dispatchportal.redis import BROKER_ERRORS

logger = logging.getLogger(__name__)

BAD_ENDINGS = frozenset({"no_worker", "failed", "timed_out"})


@task_postrun.connect
def _after_task(sender: Any = None, retval: Any = None, state: str = "", **_: Any) -> None:
    name = getattr(sender, "name", "")
    if name == "rooms.reconcile" and state == "SUCCESS" and isinstance(retval, dict):
        if retval.get("skipped"):
            return
        from .alerts import condition_record

        condition_record(key="reconcile", ok=not retval.get("error"), error=str(retval.get("error") or ""))
    elif name in ("rooms.dispatch_deadline", "rooms.dispatch_request") and retval in BAD_ENDINGS:
        from .tasks import alerts_evaluate

        try:
            # The task has finished: any re-dispatch it made is committed.
            alerts_evaluate.apply_async(kwargs={"only": ["dispatches"], "settled": True}, retry=False)
        except BROKER_ERRORS:
            logger.warning("could not enqueue the dispatch alert check; beat will run it")


@task_failure.connect
def _task_failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    if getattr(sender, "name", "") == "rooms.reconcile":
        from .alerts import condition_record

        condition_record(key="reconcile", ok=False, error=f"{type(exception).__name__}: {exception}")


def _checks_nudge() -> None:
    from .tasks import alerts_evaluate

    try:
        alerts_evaluate.apply_async(kwargs={"only": ["dispatches", "canaries"]}, retry=False)
    except BROKER_ERRORS:
        logger.warning("could not enqueue the alert checks; beat will run them")


@receiver(post_save, sender=Agent, dispatch_uid="watch_app.agent_disabled")
def _agent_saved(sender: Any = None, instance: Agent | None = None, **_: Any) -> None:
    if instance is not None and not instance.enabled:
        transaction.on_commit(_checks_nudge, robust=True)
