"""Registers the emulator's pytest plugin for these tests even when the top-level conftest
does not (a second registration is a no-op), and provides a webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import WebhookReceiver, start_receiver


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("livekit_emulator.pytest_plugin")


@pytest.fixture
def webhook_receiver(livekit_server) -> Iterator[WebhookReceiver]:
    """A receiver on a free port, with the emulator's webhooks pointed at it."""
    receiver, httpd = start_receiver()
    livekit_server.control.webhooks(url=receiver.url, retry_backoff_ms=20)
    yield receiver
    httpd.shutdown()
    httpd.server_close()
