import pytest

LONG_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


@pytest.fixture(autouse=True)
def _livekit_keys(settings):
    settings.LIVEKIT_API_KEY = "test-key"
    settings.LIVEKIT_API_SECRET = LONG_SECRET
    settings.PUBLIC_LIVEKIT_URL = "wss://livekit.example.com"
