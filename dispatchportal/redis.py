"""One Redis client per process for the hot paths that need raw commands (pipelines, lists):
rate limits, room-live markers and the token-event queue. None without REDIS_URL, when
callers fall back to the Django cache or Celery."""

from __future__ import annotations

import os
import time
from functools import lru_cache

import redis
from django.conf import settings
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

# What a Redis (or broker) outage looks like to callers that must keep serving without it.
REDIS_ERRORS = (RedisError, OSError)
BROKER_ERRORS = (KombuError, *REDIS_ERRORS)


@lru_cache(maxsize=4)
def _client(url: str, pid: int) -> redis.Redis:
    # One connection (with redis-py's lock for threads) instead of a pool checkout per
    # command: the token path makes one call per request. Keyed by pid: a forked worker
    # must not share its parent's socket.
    return redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, single_connection_client=True
    )


def redis_client() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None
    try:
        return _client(settings.REDIS_URL, os.getpid())
    except REDIS_ERRORS:  # a process started while Redis is down: serve as without it
        return None


def redis_key(*parts: str) -> str:
    """A key in the portal's namespace (CACHE_KEY_PREFIX), apart from the Django cache's."""
    return ":".join((settings.CACHE_KEY_PREFIX, *parts))


# After an outage is seen, callers on hot paths skip Redis (and the broker, which is the same
# server) for this long instead of each paying a connect timeout: the token path answers at
# once while Redis is down, and tries it again a few seconds later.
REDIS_RETRY_AFTER_S = 3.0
_down_until = 0.0


def redis_down_mark() -> None:
    global _down_until
    _down_until = time.monotonic() + REDIS_RETRY_AFTER_S


def redis_available() -> bool:
    """False for a few seconds after a caller saw Redis fail (always True without REDIS_URL:
    then the broker is not Redis)."""
    return time.monotonic() >= _down_until
