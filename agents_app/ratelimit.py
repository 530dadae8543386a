"""Admission on the token path: count the request against the client's per-minute limit,
read whether the room is live, and, only if the request is admitted, set the flag whose first
setter in each window schedules the application of token facts, all in one Redis round trip
(a Lua script, so a refused request never schedules anything).

Without Redis the Django cache counts, and the caller asks whether the room is live itself.

Counting fails OPEN: when Redis is unreachable the request is admitted uncounted, and for
`REDIS_RETRY_AFTER_S` the token path does not try Redis again, so it neither waits on a
connect timeout nor answers 5xx. Why open: the limit guards LiveKit and the ledger against
a runaway client; every caller is an authenticated API client, the token is recorded in the
database either way, and failing closed would stop every join while Redis restarts."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.cache import cache

from dispatchportal.redis import REDIS_ERRORS, redis_available, redis_client, redis_down_mark, redis_key

logger = logging.getLogger(__name__)
WINDOW_S = 60

_ADMIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local live = redis.call('EXISTS', KEYS[2])
local first = 0
if count <= tonumber(ARGV[1]) and tonumber(ARGV[3]) > 0 then
  if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[3]) then first = 1 end
end
return {count, live, first}
"""


@dataclass(frozen=True, slots=True)
class Admission:
    retry_after: int  # 0 when admitted, else seconds until the window ends
    exists: bool | None = None  # whether `exists_key` existed; None when Redis was not asked
    # Whether this request set the flag first in its window; None when Redis was not asked.
    first_in_window: bool | None = None


@lru_cache(maxsize=4)
def _admit_script(client: Any) -> Any:
    return client.register_script(_ADMIT)  # EVALSHA, loading the script on first use


def _count_in_cache(key: str) -> int:
    if cache.add(key, 1, WINDOW_S * 2):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, WINDOW_S * 2)
        return 1


def admit(*, key: str, limit: int, exists_key: str, flag_key: str = "", flag_ms: int = 0) -> Admission:
    now = time.time()
    window = int(now // WINDOW_S)
    retry_after = max(1, int((window + 1) * WINDOW_S - now))
    counter = redis_key("rl", key, str(window))
    if not settings.REDIS_URL:
        count = _count_in_cache(counter)
        return Admission(retry_after if count > limit else 0)
    if not redis_available():
        return Admission(0)
    try:
        script = _admit_script(redis_client())
        keys = [counter, exists_key, flag_key or counter]
        count, live, first = script(keys=keys, args=[limit, WINDOW_S * 2, flag_ms if flag_key else 0])
    except REDIS_ERRORS:
        redis_down_mark()
        logger.warning("rate limit not counted: Redis unreachable (failing open)")
        return Admission(0)
    return Admission(retry_after if count > limit else 0, bool(live), bool(first))
