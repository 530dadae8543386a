"""An agent whose worker died: recorded as soon as the portal is sure, not when LiveKit notices.

LiveKit keeps listing a dead worker's agent participant until its connection times out (about
20 s on livekit-server 1.13.5) and its job as running for good. The worker poll (watch_app)
knows first: the worker's health URL stopped answering. It calls `agent_dead_record`, which
gives the same verdict as the agent leaving (failed, then the next attempt, the fallback, or
giving up) and takes the ghost out of LiveKit, so it never stands next to its replacement.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from livekit_boundary.client import LiveKit, LiveKitError, LiveKitNotFound, livekit_run

from ..models import Dispatch
from .ledger import dispatch_note, dispatch_retry, dispatch_transition

logger = logging.getLogger(__name__)

# How the ledger's verdict on such a dispatch begins (`last_error`): the doctor reads it.
WORKER_STOPPED = "the agent's worker stopped answering"


def agent_dead_record(*, dispatch: Dispatch, reason: str) -> bool | None:
    """The agent of `dispatch` (agent_joined) is dead: its worker stopped answering (`reason`
    says how, starting with WORKER_STOPPED). Failed at once; then its participant is removed
    from the room and its LiveKit dispatch deleted (best effort: LiveKit drops them itself
    later); then the next attempt, the fallback, or giving up, as when an agent leaves
    (`agent_left_record`), in this order so that the replacement never joins beside the ghost.
    None when the dispatch had already moved on; else whether a new attempt began."""
    identity = dispatch.participant_identity
    error = reason + (f"; LiveKit still listed its participant '{identity}'" if identity else "")
    with transaction.atomic():
        if not dispatch_transition(
            dispatch=dispatch,
            to=Dispatch.Status.FAILED,
            expect=(Dispatch.Status.AGENT_JOINED,),
            detail=error,
            last_error=error,
            left_at=timezone.now(),
        ):
            return None
    _ghost_remove(dispatch=dispatch)
    with transaction.atomic():
        return dispatch_retry(dispatch=dispatch) is not None


def _ghost_remove(*, dispatch: Dispatch) -> None:
    room = Dispatch.objects.filter(pk=dispatch.pk).values_list("room__name", flat=True).first() or ""
    identity, livekit_id = dispatch.participant_identity, dispatch.livekit_dispatch_id

    async def remove(client: LiveKit) -> list[str]:
        done = []
        if identity:
            try:
                await client.remove_participant(room, identity)
                done.append(f"participant '{identity}' removed")
            except LiveKitNotFound:
                done.append(f"participant '{identity}' already gone")
        if livekit_id:
            try:
                await client.delete_dispatch(room, livekit_id)
                done.append(f"LiveKit dispatch {livekit_id} deleted")
            except LiveKitNotFound:
                done.append(f"LiveKit dispatch {livekit_id} already gone")
        return done

    try:
        done = livekit_run(remove)
    except LiveKitError as exc:
        dispatch_note(
            dispatch=dispatch,
            detail=f"could not remove the dead agent from LiveKit ({exc.message}); LiveKit drops it "
            "when its connection times out",
            level=logging.WARNING,
        )
        return
    if done:
        dispatch_note(dispatch=dispatch, detail="; ".join(done))
