"""Fixtures of the tests against the real server (the server and workers: tests/real_livekit.py)."""

from __future__ import annotations

import pytest

from tests.receiver import receiver  # noqa: F401  (fixture)


@pytest.fixture
def portal(real_livekit, settings):
    """The portal's LiveKit settings pointing at the real server."""
    settings.LIVEKIT_URL = real_livekit.url
    settings.LIVEKIT_API_KEY = real_livekit.api_key
    settings.LIVEKIT_API_SECRET = real_livekit.api_secret
    settings.LIVEKIT_TIMEOUT_S = 5.0
    return real_livekit
