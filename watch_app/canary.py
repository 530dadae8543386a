"""Canary dispatches (filled in below)."""

from __future__ import annotations

from datetime import datetime


def canaries_check(*, now: datetime | None = None) -> None:
    return None
