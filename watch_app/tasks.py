"""Celery tasks of alerts, worker presence and canaries: each calls a service (the delivery
and canary tasks take an id; the periodic checks and the poll take none)."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from . import alerts, checks


@shared_task(name="alerts.evaluate", soft_time_limit=60, time_limit=90, ignore_result=True)
def alerts_evaluate(only: list[str] | None = None, settled: bool = False) -> list[str]:
    """Run the alert checks (beat, every ALERTS_EVALUATE_INTERVAL_S; `settled` when nudged by a
    dispatch task that has finished)."""
    return checks.alerts_evaluate(only=only, settled=settled)


# alerts.deliver and workers.poll call outside the portal: they run on the outbound queue
# (dispatchportal.celery.OUTBOUND_TASKS), never on the workers that dispatch agents. Their
# calls end by their own deadlines (net.py) well inside these limits: a delivery attempt by
# models.MAX_TIMEOUT_S, a poll pass by presence.PASS_BUDGET_S.
@shared_task(
    bind=True, name="alerts.deliver", acks_late=True, soft_time_limit=30, time_limit=45, max_retries=None
)
def alert_deliver(self: Task, delivery_id: int, attempt: int | None = None) -> Any:
    """Make attempt `attempt` of one alert delivery; the row counts attempts and bounds the
    retries (`attempt` None: the next one, for messages queued before attempts were named)."""
    try:
        return alerts.delivery_send(delivery_id=delivery_id, attempt=attempt)
    except alerts.DeliveryRetry as exc:
        raise self.retry(args=(delivery_id, exc.attempt), exc=exc, countdown=exc.countdown) from None


@shared_task(name="workers.poll", soft_time_limit=60, time_limit=90, ignore_result=True)
def workers_poll(endpoint_ids: list[int] | None = None) -> int:
    """Poll the registered worker health URLs (beat, every WORKER_POLL_INTERVAL_S), or those
    given (admin's "Poll now")."""
    from . import presence

    return presence.workers_poll(endpoint_ids=endpoint_ids)


@shared_task(name="canary.run", soft_time_limit=120, time_limit=150, ignore_result=True)
def canary_run(agent_id: int) -> str | None:
    """One canary dispatch of one agent (its own django-celery-beat schedule)."""
    from . import canary

    run = canary.canary_run(agent_id=agent_id)
    return run.status if run else None
