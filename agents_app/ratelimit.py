"""Admission on the token path: count the request against the client's per-minute limit and,
only if the request is admitted, set the flag whose first setter in each window schedules the
application of token facts, in one Redis round trip (a Lua script, so a refused request never
schedules anything), sent before and read after the token's own INSERT.

Without Redis the Django cache counts.

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
from redis.exceptions import NoScriptError

from dispatchportal.redis import REDIS_ERRORS, redis_available, redis_client, redis_down_mark, redis_key

logger = logging.getLogger(__name__)
WINDOW_S = 60

_ADMIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local first = 0
if count <= tonumber(ARGV[1]) and tonumber(ARGV[3]) > 0 then
  if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then first = 1 end
end
return {count, first}
"""


@dataclass(frozen=True, slots=True)
class Admission:
    retry_after: int  # 0 when admitted, else seconds until the window ends
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


class Admitting:
    """An admission sent to Redis whose answer is read later (`result`): meanwhile the caller
    makes its own round trip (the token's INSERT), so a request waits for the slower of the
    two, not for both. Without Redis, or while it is down, the answer is known at once."""

    def __init__(self, *, key: str, limit: int, flag_key: str = "", flag_ms: int = 0) -> None:
        now = time.time()
        window = int(now // WINDOW_S)
        self.limit = limit
        self.retry_after = max(1, int((window + 1) * WINDOW_S - now))
        counter = redis_key("rl", key, str(window))
        self.keys = [counter, flag_key or counter]
        self.args = [limit, WINDOW_S * 2, flag_ms if flag_key else 0]
        self.client: Any = None
        self.known: Admission | None = None
        if not settings.REDIS_URL:
            count = _count_in_cache(counter)
            self.known = Admission(self.retry_after if count > limit else 0)
        elif not redis_available():
            self.known = Admission(0)
        else:
            self._send()

    def _send(self) -> None:
        try:
            client = redis_client()
            if client is None:  # this process started while Redis was down
                raise ConnectionError("Redis unreachable")
            script = _admit_script(client)
            client.single_connection_lock.acquire()  # held until the answer is read
            self.client = client
            client.connection.send_command("EVALSHA", script.sha, len(self.keys), *self.keys, *self.args)
        except REDIS_ERRORS:
            self._failed()

    def _failed(self) -> None:
        redis_down_mark()
        logger.warning("rate limit not counted: Redis unreachable (failing open)")
        self.known = Admission(0)
        if self.client is not None:
            self.client.connection.disconnect()  # a half-read answer must not be read by the next caller
            self.client.single_connection_lock.release()
            self.client = None

    def result(self) -> Admission:
        if self.known is not None:
            return self.known
        client = self.client
        try:
            try:
                count, first = client.connection.read_response()
            except NoScriptError:  # a fresh (or restarted) Redis: load the script, once
                count, first = _admit_script(client)(keys=self.keys, args=self.args)
        except REDIS_ERRORS:
            self._failed()
            return self.known
        finally:
            if self.client is not None:
                client.single_connection_lock.release()
                self.client = None
        self.known = Admission(self.retry_after if count > self.limit else 0, bool(first))
        return self.known
