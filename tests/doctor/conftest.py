"""The emulator wired into the portal's settings, and helpers to put rooms in the states the
doctor has to recognise: people joining with tokens, dispatches, simulated workers."""

from __future__ import annotations

import io
from typing import Any, TypeVar

from django.core.management import call_command
from livekit import api

from livekit_boundary.client import LkDispatch, livekit_call
from tests.support import agents_in, eventually  # noqa: F401  (re-exported to the tests)

T = TypeVar("T")


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
