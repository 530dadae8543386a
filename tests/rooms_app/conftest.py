"""Fixtures for the dispatch-lifecycle tests: the LiveKit emulator wired into settings, a real
Celery worker subprocess, the live server receiving the emulator's webhooks, and polling.

The worker is a separate process (`celery -A dispatchportal worker`), so tests that use it
need committed rows (`transactional_db`, via `live_server`). It consumes a queue unique to
this test session, so no other worker on the same broker (another engineer's run, `make run`)
takes these tasks, and none of these tasks reach them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings as django_settings
from django.db import connection

from dispatchportal.celery import app as celery_app
from tests.support import agents_in, eventually  # noqa: F401  (re-exported to the tests)

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
QUEUE = f"rooms-test-{uuid.uuid4().hex[:10]}"


def outbound_queue(queue: str) -> str:
    """The outbound queue (alert deliveries, worker polls) that goes with a session's queue."""
    return f"{queue}-outbound"


# Before anything is published in this session: route every task to this session's queues.
celery_app.conf.task_default_queue = QUEUE
django_settings.OUTBOUND_QUEUE = outbound_queue(QUEUE)


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}{port}/{db['NAME']}"


def queue_purge(queue: str = QUEUE) -> None:
    """Drop tasks other tests published with no worker running (the token path enqueues
    directly): a worker starting now would run them against this test's rows."""
    with celery_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


class Worker:
    """A `celery worker` subprocess on this session's queue(s) (`queue`: comma-separated),
    restartable and killable."""

    def __init__(self, env: dict[str, str], log_dir: Path, *, queue: str = QUEUE) -> None:
        self.env = env
        self.queue = queue
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.log_dir / f"worker-{self.starts}.log"
        log = open(self.log_path, "wb")  # noqa: SIM115  closed with the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "dispatchportal",
                "worker",
                "-Q",
                self.queue,
                "-n",
                f"{self.queue.replace(',', '+')}-{self.starts}@%h",
                "--pool",
                "threads",
                "--concurrency",
                "4",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        eventually(self._ready, timeout=30, interval=0.05, what="celery worker ready")

    def _ready(self) -> bool:
        assert self.process is not None and self.log_path is not None
        if self.process.poll() is not None:
            raise AssertionError(f"celery worker exited {self.process.returncode}:\n{self.log()}")
        return b" ready." in self.log_path.read_bytes()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no acknowledgement, exactly a crashed host."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def worker_start(
    server: Any, tmp_path_factory: Any, *, queue: str, consume: str = "both", **settings: str
) -> Worker:
    """A started Celery worker for `server` (the emulator or the real LiveKit), with a cache
    namespace named `queue`, consuming `queue` and its outbound queue (`consume="both"`), or
    only one of them (`"dispatch"`, `"outbound"`); `settings` override the environment."""
    queues = {
        "both": f"{queue},{outbound_queue(queue)}",
        "dispatch": queue,
        "outbound": outbound_queue(queue),
    }[consume]
    for option in ("data_folder_in", "data_folder_out", "processed_folder"):
        folder = django_settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(option)
        if folder:  # the embedded filesystem broker needs its folders
            Path(folder).mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.rooms_app.worker_settings",
        "DATABASE_URL": _database_url(),
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "LIVEKIT_TIMEOUT_S": "2",
        "DISPATCH_RETRY_BACKOFF_S": "0.2",
        "DISPATCH_RETRY_BACKOFF_MAX_S": "1",
        "DISPATCH_MAX_RETRIES": "30",
        # The emulator lists a job as soon as its simulated worker takes it: no assignment lag.
        "DISPATCH_ASSIGNMENT_WINDOW_S": "0",
        "CACHE_KEY_PREFIX": queue,
        "ROOMS_TEST_QUEUE": queue,
        "OUTBOUND_QUEUE": outbound_queue(queue),
        "ROOMS_TEST_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
        "LOG_LEVEL": "INFO",
        **settings,
    }
    worker = Worker(env, tmp_path_factory.mktemp("celery"), queue=queues)
    for name in queues.split(","):
        queue_purge(name)
    worker.start()
    return worker


@pytest.fixture(scope="session")
def _worker_session(
    django_db_setup, django_db_blocker, livekit_emulator_session, tmp_path_factory
) -> Iterator[Worker]:
    global _session_worker_started
    worker = worker_start(livekit_emulator_session, tmp_path_factory, queue=QUEUE)
    _session_worker_started = True
    yield worker
    _session_worker_started = False
    worker.stop()
    wait_database_sessions_end(django_db_blocker)


_session_worker_started = False


def tasks_settle(django_db_blocker: Any) -> None:
    """Once the session's worker has started, every task any test publishes goes to its queue
    (`task_default_queue` above), whether the test asked for the worker or not. Before a
    transactional test's flush: the tasks still queued are dropped (they would run against the
    next test's rows) and the worker's last task is waited for (one running beside the flush's
    TRUNCATE deadlocked in CI). A token's application task waits 0.5 s in the worker: the quiet
    must last longer than that."""
    if not _session_worker_started:
        return
    queue_purge()
    queue_purge(outbound_queue(QUEUE))
    wait_database_quiet(django_db_blocker, settle_s=0.6)


def wait_database_sessions_end(django_db_blocker: Any) -> None:
    """A stopped worker's sessions end a moment after its process: wait, or dropping the test
    database fails with "being accessed by other users"."""
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:

        def others() -> int:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]

        deadline = time.monotonic() + 10
        while others() and time.monotonic() < deadline:
            time.sleep(0.05)


def wait_database_quiet(django_db_blocker: Any, *, settle_s: float = 0.3, timeout_s: float = 15.0) -> None:
    """Wait until no other session of the test database is in a query or a transaction for
    `settle_s`: a worker task still running when the test's flush (TRUNCATE) starts can
    deadlock with it."""
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        deadline, quiet_since = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
            if cursor.fetchone()[0]:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle_s:
                return
            time.sleep(0.05)


@pytest.fixture
def worker(_worker_session: Worker) -> Iterator[Worker]:
    """The session's worker, (re)started if a test killed it."""
    if _worker_session.process is None or _worker_session.process.poll() is not None:
        _worker_session.start()
    yield _worker_session


@pytest.fixture
def e2e(lk, live_server, worker, settings, django_db_blocker) -> Iterator[Any]:
    """Everything end to end: the emulator sends webhooks to the live server, whose views
    enqueue tasks for the real worker. Afterwards: no more webhooks, no queued tasks, and the
    worker's last task ended before the test's flush (a TRUNCATE beside a running task can
    deadlock, seen in CI)."""
    queue_purge()
    queue_purge(outbound_queue(QUEUE))
    _share_worker_cache(settings, worker)
    lk.control.webhooks(url=f"{live_server.url}/livekit/webhook", retry_backoff_ms=100)
    settings.DISPATCH_RETRY_BACKOFF_S = 0.2
    yield lk
    lk.control.webhooks(url=None)
    tasks_settle(django_db_blocker)


def _share_worker_cache(settings: Any, worker: Worker) -> None:
    """The test process and the worker must share one cache namespace (room-live markers,
    the token-event queue): the worker's, emptied so no test sees another's markers."""
    prefix = worker.env["CACHE_KEY_PREFIX"]
    settings.CACHE_KEY_PREFIX = prefix
    if settings.REDIS_URL:
        settings.CACHES = {
            "default": {
                "BACKEND": "dispatchportal.cache.RedisCache",
                "LOCATION": settings.REDIS_URL,
                "KEY_PREFIX": prefix,
            }
        }
        from dispatchportal.redis import redis_client

        client = redis_client()
        stale = list(client.scan_iter(f"{prefix}:*"))
        if stale:
            client.delete(*stale)
    else:
        location = worker.env["ROOMS_TEST_CACHE_DIR"]
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": location,
            }
        }
        from django.core.cache import cache

        cache.clear()


def create_dispatch_calls(server: Any, room: str) -> list[dict[str, Any]]:
    return [c for c in server.control.state()["counters"]["create_dispatch_calls"] if c["room"] == room]
