"""Webhook delivery as LiveKit does it: protojson bodies signed with a JWT carrying the body's
SHA-256, POSTed as `application/webhook+json`, retried with backoff on connection errors and
5xx, dropped after 30 s in the queue or beyond 200 queued. Switches can drop, delay or
duplicate deliveries.

One background task sends the queue in order, so the Twirp handlers never wait on a receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import aiohttp
from google.protobuf import json_format
from livekit.protocol.webhook import WebhookEvent

from .auth import sign_webhook

logger = logging.getLogger("livekit_emulator.webhooks")

CONTENT_TYPE = "application/webhook+json"
QUEUE_LIMIT = 200
MAX_QUEUE_AGE = 30.0
MAX_BACKOFF = 30.0
REQUEST_TIMEOUT = 10.0


@dataclass(slots=True)
class WebhookSettings:
    """What `POST /_emulator/webhooks` changes; `drop` and `duplicate` are shares in [0, 1]."""

    url: str | None = None
    drop: float = 0.0
    duplicate: float = 0.0
    delay_ms: float = 0.0
    # LiveKit retries after 1 s, then doubling up to 30 s; tests may shorten the wait.
    retry_backoff_ms: float = 1000.0
    max_retries: int = 4

    def updated(self, changes: dict[str, Any]) -> WebhookSettings:
        """A copy with `changes` applied, validated; raises ValueError on a bad field."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown webhook settings: {', '.join(sorted(unknown))}")
        result = replace(self, **changes)
        if result.url is not None and not isinstance(result.url, str):
            raise ValueError("url must be a string or null")
        result.url = result.url or None
        for name in ("drop", "duplicate"):
            value = float(getattr(result, name))  # True means "always"
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
            setattr(result, name, value)
        for name in ("delay_ms", "retry_backoff_ms"):
            if float(getattr(result, name)) < 0:
                raise ValueError(f"{name} must not be negative")
        if int(result.max_retries) < 0:
            raise ValueError("max_retries must not be negative")
        return result


@dataclass(slots=True)
class _Delivery:
    id: str
    event: str
    body: bytes
    queued_at: float
    due: float


class WebhookSender:
    """Queues events and delivers them from one background task, in order."""

    def __init__(self, *, api_key: str, api_secret: str, settings: WebhookSettings) -> None:
        self._api_key = api_key
        self._api_secret = api_secret
        self._initial = settings
        self.settings = settings
        self._queue: deque[_Delivery] = deque()
        self._wakeup = asyncio.Event()
        self._in_flight = 0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._random = random.Random()
        self._reset_stats()

    def _reset_stats(self) -> None:
        self.sent = self.failed = self.dropped = self.duplicated = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=100)

    @property
    def pending(self) -> int:
        """Deliveries queued or being attempted (retries included)."""
        return len(self._queue) + self._in_flight

    def status(self) -> dict[str, Any]:
        return {
            **asdict(self.settings),
            "pending": self.pending,
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "duplicated": self.duplicated,
            "recent": list(self.recent),
        }

    def enqueue(self, event: WebhookEvent) -> None:
        settings = self.settings
        if not settings.url:
            return
        if self._random.random() < settings.drop:
            self._record(event.id, event.event, "dropped (drop switch)")
            return
        now = time.monotonic()
        body = json_format.MessageToJson(event, indent=None).encode()
        copies = 2 if self._random.random() < settings.duplicate else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            if len(self._queue) >= QUEUE_LIMIT:
                self._record(event.id, event.event, "dropped (queue full)")
                continue
            self._queue.append(_Delivery(event.id, event.event, body, now, now + settings.delay_ms / 1000))
        self._wakeup.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        self._task = asyncio.create_task(self._run(), name="livekit-emulator-webhooks")

    async def stop(self) -> None:
        await self._cancel()
        if self._session is not None:
            await self._session.close()

    async def reset(self) -> None:
        """Back to the settings the server started with, with an empty queue."""
        await self._cancel()
        self._queue.clear()
        self._in_flight = 0
        self.settings = self._initial
        self._reset_stats()
        self._task = asyncio.create_task(self._run(), name="livekit-emulator-webhooks")

    async def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            delivery = self._queue.popleft()
            self._in_flight = 1
            try:
                wait = delivery.due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if time.monotonic() - delivery.queued_at > MAX_QUEUE_AGE:
                    self._record(delivery.id, delivery.event, "dropped (too long in queue)")
                else:
                    await self._deliver(delivery)
            finally:
                self._in_flight = 0

    async def _deliver(self, delivery: _Delivery) -> None:
        assert self._session is not None
        attempt = 0
        while True:
            url = self.settings.url
            if not url:
                self._record(delivery.id, delivery.event, "dropped (no webhook url)")
                return
            headers = {
                "Content-Type": CONTENT_TYPE,
                "Authorization": sign_webhook(delivery.body, self._api_key, self._api_secret),
            }
            try:
                async with self._session.post(url, data=delivery.body, headers=headers) as response:
                    await response.read()
                    if response.status < 500:
                        ok = response.status < 300
                        self._record(delivery.id, delivery.event, f"HTTP {response.status}", ok=ok)
                        return
                    reason = f"HTTP {response.status}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt >= self.settings.max_retries:
                self._record(delivery.id, delivery.event, f"failed after {attempt + 1} attempts: {reason}")
                return
            backoff = min(self.settings.retry_backoff_ms / 1000 * 2**attempt, MAX_BACKOFF)
            logger.info("webhook %s to %s failed (%s); retrying in %.2fs", delivery.id, url, reason, backoff)
            await asyncio.sleep(backoff)
            attempt += 1

    def _record(self, event_id: str, event: str, outcome: str, *, ok: bool | None = None) -> None:
        if ok is True:
            self.sent += 1
        elif outcome.startswith("dropped"):
            self.dropped += 1
        else:
            self.failed += 1
        self.recent.append({"id": event_id, "event": event, "outcome": outcome, "at": time.time()})
