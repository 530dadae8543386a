"""The dispatch doctor: "why is there no agent in room X?" answered in one place.

It walks the chain every agent dispatch goes through and marks each link ok, broken or
unknown; at a broken link it names the cause and the fix in plain words:

1. LiveKit reachable, credentials accepted.
2. Rules give the room its agents (the explain tool), and those agents are enabled.
3. Token path: a token was minted for the room, it carried the agent, and the room did not
   exist before the first join (LiveKit then ignores the token's agents).
4. A dispatch for each expected agent is present in LiveKit (ListDispatch).
5. The dispatch got a job, i.e. a worker registered as exactly that name took it.
6. The job did not fail or end.
7. The agent's participant is in the room (or was replaced when it left).
8. No duplicate agents of one name, and no agents the portal does not manage.

Facts come from LiveKit (ListRooms, ListParticipants, ListDispatch through `livekit_boundary.client`)
and from the ledger (tokens minted, dispatch history), gathered once into a snapshot
(facts.py); pure functions of that snapshot judge each link (verdicts.py); wording.py says
it in words. The doctor only reads: running it changes nothing, so it is safe from a shell,
the admin and the API alike.

Used by `manage.py doctor`, the admin doctor page and `GET /api/v1/rooms/{room}/diagnosis`.
"""

from .checks import room_diagnose
from .verdicts import BROKEN, OK, UNKNOWN
from .wording import (
    EXIT_CODES,
    HEALTHY,
    LIVEKIT_UNAVAILABLE,
    WAITING,
    Diagnosis,
    Link,
    diagnosis_format,
)

__all__ = [
    "BROKEN",
    "EXIT_CODES",
    "HEALTHY",
    "LIVEKIT_UNAVAILABLE",
    "OK",
    "UNKNOWN",
    "WAITING",
    "Diagnosis",
    "Link",
    "diagnosis_format",
    "room_diagnose",
]
