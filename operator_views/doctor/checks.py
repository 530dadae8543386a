"""The doctor's one entry point: gather the facts once, judge them, word the verdicts."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from agents_app.selectors import EVERYTHING, Scope

from .facts import facts_gather
from .verdicts import walk
from .wording import Diagnosis, diagnosis_worded


def room_diagnose(
    *,
    room_name: str,
    agent_name: str | None = None,
    identity: str | None = None,
    now: datetime | None = None,
    scope: Scope = EVERYTHING,
) -> Diagnosis:
    """Walk the chain for `room_name` (optionally one agent, one participant identity), with
    the facts the caller's `scope` may see (every name and URL in the answer comes from them)."""
    now = now or timezone.now()
    snap = facts_gather(room_name, now, scope, identity=identity)
    return diagnosis_worded(
        walk(snap, agent_name=agent_name),
        room_name=room_name,
        agent=agent_name,
        identity=identity,
        now=now,
        livekit_url=snap.livekit_url,
        staff=snap.staff,
    )
