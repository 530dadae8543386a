"""Admission on the token path: count the request against the client's per-minute limit,
read whether the room is live, and, only if the request is admitted, queue its ledger event,
all in one Redis round trip (a Lua script, so a refused request never queues anything).

Without Redis the Django cache counts, and the caller asks the room and hands the event over
itself. Counting fails open: Redis restarting must not turn token requests into errors."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.core.cache import cache

from dispatchportal.redis import REDIS_ERRORS, redis_client, redis_key

logger = logging.getLogger(__name__)
WINDOW_S = 60

_ADMIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local live = redis.call('EXISTS', KEYS[2])
local pushed, first = 0, 0
if count <= tonumber(ARGV[1]) and ARGV[3] ~= '' then
  redis.call('RPUSH', KEYS[3], live .. ARGV[3])
  pushed = 1
  if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[4]) then first = 1 end
end
return {count, live, pushed, first}
"""


@dataclass(frozen=True, slots=True)
class Push:
    """An item to append to a list when the request is admitted, prefixed with '1' or '0'
    (the room was live or not), and a flag set on the first push of each `flag_ms`."""

    list_key: str
    item: str
    flag_key: str
    flag_ms: int


@dataclass(frozen=True, slots=True)
class Admission:
    retry_after: int  # 0 when admitted, else seconds until the window ends
    exists: bool | None = None  # whether `exists_key` existed; None when Redis was not asked
    pushed: bool = False
    first_push: bool = False


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


def admit(*, key: str, limit: int, exists_key: str, push: Push | None = None) -> Admission:
    now = time.time()
    window = int(now // WINDOW_S)
    retry_after = max(1, int((window + 1) * WINDOW_S - now))
    counter = redis_key("rl", key, str(window))
    client = redis_client()
    try:
        if client is None:
            count = _count_in_cache(counter)
            return Admission(retry_after if count > limit else 0)
        script = _admit_script(client)
        keys = [counter, exists_key, push.list_key if push else counter, push.flag_key if push else counter]
        args = [limit, WINDOW_S * 2, push.item if push else "", push.flag_ms if push else 0]
        count, live, pushed, first = script(keys=keys, args=args)
    except REDIS_ERRORS:
        logger.warning("rate limit not counted: Redis unreachable")
        return Admission(0)
    return Admission(retry_after if count > limit else 0, bool(live), bool(pushed), bool(first))
