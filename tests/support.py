"""Helpers shared by the test packages: polling with a deadline, reading the emulator."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll `check()` until it is truthy, with a deadline (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {timeout}s (last: {result!r})")
        time.sleep(interval)


def point_portal_at(settings: Any, server: Any, *, timeout_s: float) -> Any:
    """The portal's LiveKit settings pointing at `server` (the emulator or the real server)."""
    settings.LIVEKIT_URL = server.url
    settings.LIVEKIT_API_KEY = server.api_key
    settings.LIVEKIT_API_SECRET = server.api_secret
    settings.LIVEKIT_TIMEOUT_S = timeout_s
    return server


def agents_in(server: Any, room: str, agent_name: str | None = None) -> list[dict[str, Any]]:
    """The agent participants LiveKit (the emulator) has in a room, of one name if given."""
    rooms = server.control.state(room=room)["rooms"]
    return [
        p
        for r in rooms
        for p in r["participants"]
        if p["kind"] == "AGENT" and (agent_name is None or p["attributes"].get("lk.agent_name") == agent_name)
    ]
