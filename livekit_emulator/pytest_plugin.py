"""pytest plugin: the `livekit_server` fixture, an in-process emulator with clean state per test.

Register with `pytest_plugins = ["livekit_emulator.pytest_plugin"]` in the top conftest.py.
One server runs for the whole session (starting takes a few milliseconds, but a reset is
cheaper still); every test gets it reset before and after, so no room, worker, fault or queued
webhook leaks between tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import ServerHandle, run_in_thread

API_KEY = "test-api-key"
# 32+ bytes so PyJWT does not warn about the key length.
API_SECRET = "test-api-secret-for-livekit-emulator-0123456789"
NO_RESPONSE_AFTER = 0.2


@pytest.fixture(scope="session")
def livekit_emulator_session() -> Iterator[ServerHandle]:
    # The real server's 3 s "no response from servers" wait, shortened: same answer, quicker tests.
    handle = run_in_thread(keys={API_KEY: API_SECRET}, no_response_after=NO_RESPONSE_AFTER)
    yield handle
    handle.stop()


@pytest.fixture
def livekit_emulator_reset(livekit_emulator_session: ServerHandle) -> Iterator[ServerHandle]:
    """An emulated LiveKit server: `.url`, `.api_key`, `.api_secret`, `.control`."""
    livekit_emulator_session.control.reset()
    yield livekit_emulator_session
    livekit_emulator_session.control.reset()


@pytest.fixture
def livekit_server(livekit_emulator_reset: ServerHandle) -> ServerHandle:
    """The emulator, reset (tests/livekit_emulator/ also runs its contract on the real server)."""
    return livekit_emulator_reset
