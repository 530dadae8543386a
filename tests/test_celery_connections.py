"""A Celery worker's database connection between tasks (`dispatchportal.celery`): kept for the
next task, but never one an earlier task left in a transaction, nor one the database dropped.
The checks run here on this process's own connection to the real PostgreSQL, as the worker
runs them around each task; `tests/rooms_app/test_worker_connections.py` watches a real
worker."""

from __future__ import annotations

from types import SimpleNamespace

import psycopg
import pytest
from django.db import connection, transaction

from dispatchportal.celery import task_connections_check, task_connections_release
from tests.support import eventually

pytestmark = [pytest.mark.needs_postgres, pytest.mark.django_db(transaction=True)]

WORKER_TASK = SimpleNamespace(request=SimpleNamespace(is_eager=False))
EAGER_TASK = SimpleNamespace(request=SimpleNamespace(is_eager=True))


def _backend() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _other_session() -> psycopg.Connection:
    """A session of its own on the test database, as an operator's psql."""
    connection.ensure_connection()
    return psycopg.connect(connection.connection.info.dsn, autocommit=True)


def _terminate(pid: int) -> None:
    with _other_session() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _state(other: psycopg.Connection, pid: int) -> str | None:
    row = other.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row[0] if row else None


def test_the_next_task_keeps_a_healthy_connection():
    pid = _backend()
    task_connections_release(task=WORKER_TASK)
    task_connections_check(task=WORKER_TASK)
    assert _backend() == pid


def test_a_transaction_left_open_by_a_task_is_closed_after_it():
    """A task interrupted inside a transaction Django does not know about (a time limit mid-
    statement): the connection is closed after the task, so it holds no locks until the next."""
    pid = _backend()
    with _other_session() as other:
        connection.connection.execute("BEGIN")  # behind Django's back, as an interrupted task leaves it
        connection.connection.execute("SELECT 1")
        assert _state(other, pid) == "idle in transaction"
        task_connections_release(task=WORKER_TASK)
        assert connection.connection is None
        eventually(lambda: _state(other, pid) is None, timeout=5, what="the session ended")
    assert _backend() != pid  # the next task works, on a new connection


def test_a_connection_the_database_dropped_is_replaced_before_the_task():
    """The database restarted (or an operator ended the session) between two tasks: the next
    task starts on a new connection instead of failing on the dead one."""
    pid = _backend()
    _terminate(pid)
    task_connections_check(task=WORKER_TASK)
    assert _backend() != pid


def test_an_eager_task_leaves_its_callers_connection_alone():
    """A task run eagerly (inside a request or a test) shares the caller's connection and its
    transaction: nothing is closed."""
    with transaction.atomic():
        pid = _backend()
        task_connections_check(task=EAGER_TASK)
        task_connections_release(task=EAGER_TASK)
        assert _backend() == pid
        assert connection.in_atomic_block
