"""Fixed-window request counting shared by every process: one Redis round trip per request
when Redis is configured (INCR + EXPIRE in a pipeline), the Django cache otherwise.
Counting fails open: Redis restarting must not turn token requests into errors."""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import redis
from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)
WINDOW_S = 60


@lru_cache(maxsize=1)
def _redis() -> redis.Redis | None:
    url = getattr(settings, "REDIS_URL", "")
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5) if url else None


def _count(key: str) -> int:
    client = _redis()
    if client is not None:
        pipe = client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, WINDOW_S * 2, nx=True)
        return int(pipe.execute()[0])
    if cache.add(key, 1, WINDOW_S * 2):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, WINDOW_S * 2)
        return 1


def hit(*, key: str, limit: int) -> int:
    """Count one request; returns 0 when allowed, else the seconds until the window ends."""
    now = time.time()
    window = int(now // WINDOW_S)
    prefix = getattr(settings, "CACHE_KEY_PREFIX", "dp")
    try:
        count = _count(f"{prefix}:rl:{key}:{window}")
    except (RedisError, OSError):
        logger.warning("rate limit not counted: cache unreachable")
        return 0
    if count <= limit:
        return 0
    return max(1, int((window + 1) * WINDOW_S - now))
