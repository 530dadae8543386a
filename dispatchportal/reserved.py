"""Names the portal keeps for itself. Rooms starting with CANARY_ROOM_PREFIX are the canary's
probe rooms: no rule, no API client and no token request may use them, and the dispatch ledger
never records them."""

CANARY_ROOM_PREFIX = "dp-canary-"


def is_canary_room(name: str) -> bool:
    return name.startswith(CANARY_ROOM_PREFIX)


def pattern_reaches_canary_rooms(pattern: str) -> bool:
    """Whether a pattern names reserved rooms outright, e.g. 'dp-canary-*' or 'dp-canary-x'. A
    broad glob such as '*' is allowed: the token endpoint and the rules skip reserved names."""
    literal = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    return literal.startswith(CANARY_ROOM_PREFIX)
