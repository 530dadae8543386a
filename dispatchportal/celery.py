"""The Celery application; tasks live in each app's `tasks.py`."""

import logging
import os
from typing import Any

from celery import Celery, bootsteps, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dispatchportal.settings")

# Tasks that call outside the portal (alert deliveries, worker health polls). They run on a
# queue of their own (settings.OUTBOUND_QUEUE, its own worker process: `celery worker -Q
# outbound`), so a slow or hostile endpoint never holds the workers that dispatch agents.
# Canary runs call LiveKit only, like the dispatch tasks, and stay on the default queue.
OUTBOUND_TASKS = frozenset({"alerts.deliver", "workers.poll"})


def task_route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
    """Celery router (CELERY_TASK_ROUTES): outbound tasks to settings.OUTBOUND_QUEUE, read at
    each send, so a test session can give them a queue of its own."""
    if name in OUTBOUND_TASKS:
        from django.conf import settings

        return {"queue": settings.OUTBOUND_QUEUE}
    return None


app = Celery("dispatchportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["dispatchportal"])  # the project's own tasks (retention)
logger = logging.getLogger(__name__)


class Heartbeat(bootsteps.StartStopStep):
    """Each worker writes a heartbeat row every few seconds (`rooms_app` WorkerHeartbeat):
    the doctor blames the worker only when no heartbeat is recent."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.timer_ref: Any = None
        self.started_at: Any = None

    def start(self, worker: Any) -> None:
        from django.utils import timezone

        from rooms_app.services import HEARTBEAT_INTERVAL_S

        self.started_at = timezone.now()
        self.beat(worker)
        self.timer_ref = worker.timer.call_repeatedly(HEARTBEAT_INTERVAL_S, self.beat, (worker,), priority=10)

    def stop(self, worker: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def beat(self, worker: Any) -> None:
        from django.db import DatabaseError, close_old_connections

        from rooms_app.services import worker_heartbeat

        close_old_connections()
        try:
            worker_heartbeat(hostname=worker.hostname, started_at=self.started_at)
        except DatabaseError:  # the next beat tries again
            logger.warning("could not write the worker heartbeat", exc_info=True)


app.steps["worker"].add(Heartbeat)


@signals.task_prerun.connect(weak=False, dispatch_uid="dp_connections_prerun")
def task_connections_check(task: Any = None, **_: Any) -> None:
    """Before each task a worker runs: the database connections an earlier task left are
    reused (Celery closes them only every CELERY_DB_REUSE_MAX tasks), unless one is in a
    query or a transaction (a time limit can interrupt a task mid-query, and the connection
    then looks usable to Django), older than CONN_MAX_AGE, or does not answer a `SELECT 1`
    (the database restarted): those are closed, and the task opens a new one."""
    if getattr(getattr(task, "request", None), "is_eager", False):
        return  # run inside the caller (a request, a test): its connection is the caller's
    from django.db import close_old_connections, connections

    _connections_close_busy()
    close_old_connections()
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and not conn.in_atomic_block and not conn.is_usable():
            conn.close()


@signals.task_postrun.connect(weak=False, dispatch_uid="dp_connections_postrun")
def task_connections_release(task: Any = None, **_: Any) -> None:
    """After each task a worker runs: a connection still in a query or a transaction is closed,
    so it holds no locks until the next task."""
    if not getattr(getattr(task, "request", None), "is_eager", False):
        _connections_close_busy()


def _connections_close_busy() -> None:
    from django.db import connections
    from psycopg.pq import TransactionStatus

    for conn in connections.all(initialized_only=True):
        raw = conn.connection
        if raw is None or conn.in_atomic_block or conn.vendor != "postgresql":
            continue
        if raw.info.transaction_status != TransactionStatus.IDLE:
            conn.close()
