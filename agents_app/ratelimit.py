"""Admission on the token path: each API client's per-minute request limit.

With Redis, the window's count is shared by every process, and each process takes it in
leases: one INCRBY reserves a few admissions, which the process then hands out locally, so
most token requests make no Redis round trip at all. A lease is at most 1 % of the limit
(at most `MAX_LEASE`, and 1 for limits under 200, which therefore count exactly). It never
admits more than the limit; at worst, slots reserved by one process and unused when the
minute ends are refused to the others, at most (processes - 1) x lease per window.

Without Redis the Django cache counts.

Counting fails OPEN: when Redis is unreachable the request is admitted uncounted, and for
`REDIS_RETRY_AFTER_S` the token path does not try Redis again, so it neither waits on a
connect timeout nor answers 5xx. Why open: the limit guards LiveKit and the ledger against
a runaway client; every caller is an authenticated API client, the token is recorded in the
database either way, and failing closed would stop every join while Redis restarts."""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.core.cache import cache

from dispatchportal.redis import REDIS_ERRORS, redis_available, redis_client, redis_down_mark, redis_key

logger = logging.getLogger(__name__)
WINDOW_S = 60
MAX_LEASE = 50

# Redis counter key (one per client and window) -> (window, admissions this process reserved
# and has not handed out yet).
_leases: dict[str, tuple[int, int]] = {}
_lock = threading.Lock()


def lease_size(limit: int) -> int:
    return max(1, min(MAX_LEASE, limit // 100))


def admit(*, key: str, limit: int) -> int:
    """Count one request of `key` (a client) against `limit` per minute. Returns 0 when it is
    admitted, else the seconds until the window ends (Retry-After)."""
    now = time.time()
    window = int(now // WINDOW_S)
    retry_after = max(1, int((window + 1) * WINDOW_S - now))
    counter = redis_key("rl", key, str(window))
    if not settings.REDIS_URL:
        return retry_after if _count_in_cache(counter) > limit else 0
    with _lock:
        _, left = _leases.pop(counter, (window, 0))
        if left:
            _leases[counter] = (window, left - 1)
            return 0
        if not redis_available():
            return 0
        granted = _lease_take(counter, limit)
        if granted is None:  # Redis unreachable: admitted uncounted
            return 0
        if granted == 0:
            return retry_after
        for stale in [k for k, (w, _) in _leases.items() if w != window]:
            del _leases[stale]
        if granted > 1:
            _leases[counter] = (window, granted - 1)
        return 0


def _lease_take(counter: str, limit: int) -> int | None:
    """Reserve a lease in the shared count: how many of its admissions fall within the limit
    (0: the limit is reached), or None when Redis is unreachable."""
    size = lease_size(limit)
    try:
        client = redis_client()
        if client is None:  # this process started while Redis was down
            raise ConnectionError("Redis unreachable")
        with client.pipeline(transaction=False) as pipe:
            pipe.incrby(counter, size)
            pipe.expire(counter, WINDOW_S * 2)
            counted, _ = pipe.execute()
            count = int(counted)
    except REDIS_ERRORS:
        redis_down_mark()
        logger.warning("rate limit not counted: Redis unreachable (failing open)")
        return None
    return max(0, min(size, limit - (count - size)))


def _count_in_cache(key: str) -> int:
    if cache.add(key, 1, WINDOW_S * 2):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, WINDOW_S * 2)
        return 1
