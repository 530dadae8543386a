"""Celery tasks of the project as a whole (not of one app): the retention sweep."""

from __future__ import annotations

from celery import shared_task

from . import retention


# No retry: the sweep is scheduled (RETENTION_INTERVAL_S) and goes on where the last one stopped.
@shared_task(name="retention.apply", soft_time_limit=60, time_limit=90)
def retention_apply() -> dict[str, int]:
    """Delete rows past their retention, in batches (`dispatchportal.retention`)."""
    return retention.retention_apply()
