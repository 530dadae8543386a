"""Fixtures for tests against the real LiveKit server (tests/real_livekit.py starts it)."""

from __future__ import annotations

import pytest

from tests.support import point_portal_at


@pytest.fixture
def portal_on_real(real_livekit, settings):
    """The real server, with the portal's LiveKit settings pointing at it."""
    return point_portal_at(settings, real_livekit, timeout_s=5.0)
