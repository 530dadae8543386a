"""The emulator wired into the portal's settings, and helpers to put rooms in the states the
doctor has to recognise: people joining with tokens, dispatches, simulated workers."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from django.core.management import call_command
from livekit import api

from rooms_app.livekit_client import LkDispatch, livekit_call

T = TypeVar("T")


@pytest.fixture
def lk(livekit_server, settings):
    """The LiveKit emulator the portal talks to in these tests."""
    settings.LIVEKIT_URL = livekit_server.url
    settings.LIVEKIT_API_KEY = livekit_server.api_key
    settings.LIVEKIT_API_SECRET = livekit_server.api_secret
    settings.LIVEKIT_TIMEOUT_S = 2.0
    return livekit_server


def person_joins(server, room: str, identity: str, *, agents: list[str] | None = None) -> dict[str, Any]:
    """A browser joins with a token (carrying `agents` in its RoomConfiguration, if any)."""
    token = (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_grants(api.VideoGrants(room_join=True, room=room))
    )
    if agents:
        token.with_room_config(
            api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=a) for a in agents])
        )
    return server.control.join(token.to_jwt())


def dispatch(room: str, agent_name: str, metadata: str = "") -> LkDispatch:
    """Another app calls CreateDispatch directly (not through the portal)."""
    return livekit_call("create_dispatch", room, agent_name, metadata)


def eventually(check: Callable[[], T], *, timeout: float = 5.0) -> T:
    """Poll until `check()` is truthy, with a deadline (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        time.sleep(0.01)


def agents_in(server, room: str) -> list[dict[str, Any]]:
    rooms = server.control.state(room=room)["rooms"]
    return [p for r in rooms for p in r["participants"] if p["kind"] == "AGENT"]


def jobs_of(server, room: str, agent_name: str) -> list[dict[str, Any]]:
    state = server.control.state(room=room)
    return [j for d in state["dispatches"] if d["agent_name"] == agent_name for j in d["jobs"]]


def doctor(*args: str) -> tuple[int, str]:
    """Run `manage.py doctor ...`; returns (exit status, what it printed)."""
    out = io.StringIO()
    try:
        call_command("doctor", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()
