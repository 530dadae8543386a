"""Writes to the dispatch ledger and calls to LiveKit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def token_minted(*, room_name: str, participant_identity: str, agents: Sequence[Any], client: str) -> None:
    """Called by the token path after minting. Placeholder until the ledger lands."""
