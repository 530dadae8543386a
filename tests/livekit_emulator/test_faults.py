"""Fault switches for the Twirp API: latency, 5xx, timeouts and "down"."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from livekit import api

from .support import call

pytestmark = pytest.mark.emulator_only("fault switches")


def _list_rooms(lk: api.LiveKitAPI):
    return lk.room.list_rooms(api.ListRoomsRequest())


def test_latency(livekit_server):
    livekit_server.control.faults(latency_ms=150)
    started = time.monotonic()

    call(livekit_server, _list_rooms)

    assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize("status", [500, 503])
def test_error_rate_answers_twirp_5xx(livekit_server, status):
    livekit_server.control.faults(error_rate=1, error_status=status)

    with pytest.raises(api.TwirpError) as error:
        call(livekit_server, _list_rooms)

    assert error.value.status == status
    assert error.value.code == ("unavailable" if status == 503 else "internal")


def test_timeout_fault_holds_the_request_past_the_client_timeout(livekit_server):
    livekit_server.control.faults(timeout_rate=1)

    # LiveKitAPI(timeout=...) does not bound requests (the client passes timeout=None to
    # aiohttp, which disables it), so callers must impose their own deadline.
    async def scenario(lk: api.LiveKitAPI):
        await asyncio.wait_for(_list_rooms(lk), timeout=0.3)

    with pytest.raises(asyncio.TimeoutError):
        call(livekit_server, scenario)


def test_down_refuses_connections_and_control_keeps_working(livekit_server):
    async def scenario(lk: api.LiveKitAPI):
        await _list_rooms(lk)  # leaves a keep-alive connection in the client's pool
        livekit_server.control.faults(down=True)
        errors = []
        for _ in range(2):
            try:
                await _list_rooms(lk)
            except aiohttp.ClientConnectionError as exc:
                errors.append(type(exc))
        return errors

    errors = call(livekit_server, scenario)

    # The pooled connection was closed under it (ServerDisconnectedError or ClientOSError,
    # depending on who notices first); a new connection is refused: ClientConnectorError.
    assert len(errors) == 2 and errors[1] is aiohttp.ClientConnectorError
    assert livekit_server.control.state()["faults"]["down"] is True

    livekit_server.control.faults()
    call(livekit_server, _list_rooms)


def test_an_empty_fault_set_clears_every_fault(livekit_server):
    livekit_server.control.faults(latency_ms=10, error_rate=1)

    cleared = livekit_server.control.faults()

    assert cleared == {
        "latency_ms": 0,
        "error_rate": 0,
        "error_status": None,
        "timeout_rate": 0,
        "down": False,
    }
    call(livekit_server, _list_rooms)
