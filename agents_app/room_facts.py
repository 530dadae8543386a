"""Where the token path hands a token's agents to the ledger.

`services.token_mint` records which agents a token carries before it answers, in one call that
also schedules those facts' application. The ledger that keeps them is rooms_app, the layer above
agents_app, which agents_app does not import. So this module declares what the token path needs
of it (`RoomFacts`), and `RoomsAppConfig.ready()` binds rooms_app's services into it once the
apps are loaded, the way `rooms_app.services.jobs` receives the Celery tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .rules import AppliedAgent


class RoomFacts(Protocol):
    """What the token path needs of the ledger (`rooms_app.services` provides it)."""

    def token_fact_intake(
        self, *, room_name: str, participant_identity: str, agents: Sequence[AppliedAgent], client: str
    ) -> bool:
        """Record the token's agents and schedule their application; True when the ledger
        knows the room is live."""
        ...


_room_facts: RoomFacts | None = None


def room_facts_bind(*, facts: RoomFacts) -> None:
    global _room_facts
    _room_facts = facts


def room_facts() -> RoomFacts:
    """The bound ledger side (raises until `RoomsAppConfig.ready()` has bound it)."""
    if _room_facts is None:
        raise RuntimeError("agents_app room facts are not bound: RoomsAppConfig.ready() binds them")
    return _room_facts
