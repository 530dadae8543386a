"""A named lock across processes: one holder at a time (a Redis lock with REDIS_URL, else a
file lock under VAR_DIR). Used by the work that must not run twice at once: the reconcile
pass, the application of recorded webhook events."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import redis
from django.conf import settings

from .redis import redis_client


@contextlib.contextmanager
def lock_try(name: str, *, timeout_s: float) -> Iterator[bool]:
    """Yields whether this caller holds the lock `name` (never waits). The Redis lock expires
    after `timeout_s`, so a holder that died frees it. It goes through the process's one Redis
    client (`redis_client`): a client of its own per call cost a connection each time, about
    2 ms on every application of webhook events. Redis unreachable raises its connection
    error, as any command would."""
    if settings.REDIS_URL:
        client = redis_client()
        if client is None:
            raise redis.ConnectionError("Redis unreachable")
        lock = client.lock(f"{settings.CACHE_KEY_PREFIX}:{name}", timeout=timeout_s)
        acquired = bool(lock.acquire(blocking=False))
        try:
            yield acquired
        finally:
            if acquired:
                with contextlib.suppress(Exception):  # expired meanwhile: nothing to release
                    lock.release()
        return
    path = Path(settings.VAR_DIR) / f"{name.replace(':', '-')}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
