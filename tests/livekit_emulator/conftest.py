"""The contract tests run against two servers: the emulator, and LiveKit's own server when it is
built (`make livekit-server`). Same test code; where they differ, the emulator is wrong.

A test of something only the emulator has (its control API's fault and webhook switches,
simulated workers, its own state) is marked `emulator_only` with the reason, and is skipped for
the real server. Also provides a webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import WebhookReceiver, start_receiver


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("livekit_emulator.pytest_plugin")


@pytest.fixture(params=["emulator", "real"])
def livekit_server(request):
    """The emulator (reset) or the real server (without rooms): `.url`, `.api_key`, `.api_secret`."""
    if request.param == "real":  # emulator_only tests are skipped at collection (tests/real_livekit.py)
        return request.getfixturevalue("real_livekit")
    return request.getfixturevalue("livekit_emulator_reset")


@pytest.fixture
def add_worker(livekit_server, request):
    """`add_worker(agent_name, behavior="accept")`: a simulated worker on the emulator, a real
    livekit-agents worker (tests/agent_worker.py, registered) on the real server: a named one
    shared by the session's tests, an unnamed one for this test only."""

    def add(agent_name: str, behavior: str = "accept") -> str:
        if livekit_server.kind != "real":
            return livekit_server.control.add_worker(agent_name, behavior=behavior)["id"]
        if agent_name:
            return livekit_server.shared_worker(agent_name, behavior).worker_id
        return request.getfixturevalue("agent_worker")(agent_name=agent_name, behavior=behavior).worker_id

    return add


@pytest.fixture
def webhook_receiver(livekit_server) -> Iterator[WebhookReceiver]:
    """A receiver on a free port, with the server's webhooks pointed at it."""
    receiver, httpd = start_receiver()
    if livekit_server.kind == "real":
        livekit_server.relay.target = receiver.url
    else:
        livekit_server.control.webhooks(url=receiver.url, retry_backoff_ms=20)
    yield receiver
    httpd.shutdown()
    httpd.server_close()
