"""Fixed-window request counting shared by every process: one Redis round trip per request
when Redis is configured (INCR + EXPIRE in a pipeline, which may carry the caller's other
reads), the Django cache otherwise. Counting fails open: Redis restarting must not turn token
requests into errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.core.cache import cache

from dispatchportal.redis import REDIS_ERRORS, redis_client, redis_key

logger = logging.getLogger(__name__)
WINDOW_S = 60


def _count_in_cache(key: str) -> int:
    if cache.add(key, 1, WINDOW_S * 2):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, WINDOW_S * 2)
        return 1


def hit(
    *,
    key: str,
    limit: int,
    with_pipeline: Callable[[Any], None] | None = None,
    default: list[Any] = (),
) -> tuple[int, list[Any]]:
    """Count one request. Returns (0 when allowed, else the seconds until the window ends;
    the results of the commands `with_pipeline` queued on the same Redis round trip, or
    `default` when there was no Redis round trip)."""
    now = time.time()
    window = int(now // WINDOW_S)
    counter = redis_key("rl", key, str(window))
    client = redis_client()
    try:
        if client is None:
            count, extra = _count_in_cache(counter), list(default)
        else:
            pipe = client.pipeline(transaction=False)
            pipe.incr(counter)
            pipe.expire(counter, WINDOW_S * 2, nx=True)
            if with_pipeline is not None:
                with_pipeline(pipe)
            count, _, *extra = pipe.execute()
    except REDIS_ERRORS:
        logger.warning("rate limit not counted: cache unreachable")
        return 0, list(default)
    if count <= limit:
        return 0, extra
    return max(1, int((window + 1) * WINDOW_S - now)), extra
