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


@shared_task(
    bind=True, name="alerts.deliver", acks_late=True, soft_time_limit=30, time_limit=45, max_retries=None
)
def alert_deliver(self: Task, delivery_id: int) -> Any:
    """Send one alert delivery; the row counts attempts and bounds the retries."""
    try:
        return alerts.delivery_send(delivery_id=delivery_id)
    except alerts.DeliveryRetry as exc:
        raise self.retry(exc=exc, countdown=exc.countdown) from None


@shared_task(name="workers.poll", soft_time_limit=60, time_limit=90, ignore_result=True)
def workers_poll() -> int:
    """Poll the registered worker health URLs (beat, every WORKER_POLL_INTERVAL_S)."""
    from . import presence

    return presence.workers_poll()


@shared_task(name="canary.run", soft_time_limit=120, time_limit=150, ignore_result=True)
def canary_run(agent_id: int) -> str | None:
    """One canary dispatch of one agent (its own django-celery-beat schedule)."""
    from . import canary

    run = canary.canary_run(agent_id=agent_id)
    return run.status if run else None
