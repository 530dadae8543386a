"""Fixtures for tests against the real LiveKit server (tests/real_livekit.py starts it)."""

from __future__ import annotations

import pytest


@pytest.fixture
def portal_on_real(real_livekit, settings):
    """The real server, with the portal's LiveKit settings pointing at it."""
    settings.LIVEKIT_URL = real_livekit.url
    settings.LIVEKIT_API_KEY = real_livekit.api_key
    settings.LIVEKIT_API_SECRET = real_livekit.api_secret
    settings.LIVEKIT_TIMEOUT_S = 5.0
    return real_livekit
