"""Reads of the dispatch ledger."""


def room_is_live(*, room_name: str) -> bool:
    """Whether the portal knows this room already exists in LiveKit (then LiveKit would
    ignore a token's agents). Placeholder until the ledger lands."""
    return False
