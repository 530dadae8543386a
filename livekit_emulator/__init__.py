"""livekit_emulator: a stand-in for a LiveKit server, for tests, demos and local runs.

It speaks LiveKit's server API (Twirp RoomService and AgentDispatchService) to the real
`livekit-api` client and reproduces the behaviours the portal depends on (dispatch without a
worker, token agents ignored on existing rooms, crashing agents, webhooks, faults). It is not a
media server: nobody can publish or receive audio or video through it. See README.md.
"""

from .client import ControlClient, ControlError
from .server import DEFAULT_KEYS, EmulatorServer, ServerHandle, run_in_thread

__all__ = [
    "DEFAULT_KEYS",
    "ControlClient",
    "ControlError",
    "EmulatorServer",
    "ServerHandle",
    "run_in_thread",
]
