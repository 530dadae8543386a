"""The worker socket's door, `/agent`, on both servers: LiveKit's token check first (401 with its
wording), then a WebSocket upgrade (404 otherwise), then the `video.agent` grant (401
"permissions denied"); with all three a worker is registered. What happens after registration
is in test_real_workers.py (real workers on the emulator) and test_dispatch.py (both)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent

from .support import http, token


def _ws_url(server) -> str:
    return "ws" + server.url[len("http") :] + "/agent"


async def _connect(server, jwt: str) -> tuple[int, str, agent.ServerMessage | None]:
    """Open /agent with the token; register if the upgrade succeeds. (status, body, answer)."""
    deadline = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(trust_env=False, timeout=deadline) as session:
        try:
            ws = await session.ws_connect(
                _ws_url(server),
                headers={"Authorization": f"Bearer {jwt}"},
                timeout=aiohttp.ClientWSTimeout(ws_close=5),
            )
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, exc.message, None
        async with ws:
            register = agent.WorkerMessage(register=agent.RegisterWorkerRequest(agent_name="door-test"))
            await ws.send_bytes(register.SerializeToString())
            frame = await asyncio.wait_for(ws.receive_bytes(), 5)
            return 101, "", agent.ServerMessage.FromString(frame)


def test_a_token_with_the_agent_grant_registers_a_worker(livekit_server):
    jwt = token(livekit_server, grants=api.VideoGrants(agent=True))

    status, _, answer = asyncio.run(_connect(livekit_server, jwt))

    assert status == 101 and answer is not None and answer.WhichOneof("message") == "register"
    assert answer.register.worker_id.startswith("AW_")
    assert answer.register.server_info.agent_protocol == 1
    assert answer.register.server_info.edition == 0  # Standard


def test_a_token_without_the_agent_grant_is_refused(livekit_server):
    jwt = token(livekit_server, grants=api.VideoGrants(room_list=True))

    status, _, answer = asyncio.run(_connect(livekit_server, jwt))

    assert (status, answer) == (401, None)


def test_a_forged_token_is_refused_before_anything_else(livekit_server):
    forged = token(livekit_server, grants=api.VideoGrants(agent=True), secret="x" * 40)

    status, _, body = http(
        "GET", livekit_server.url + "/agent", headers={"Authorization": f"Bearer {forged}"}
    )

    assert status == 401
    assert (
        body.decode() == f"invalid token: {forged}, error: token signature is invalid: signature is invalid"
    )


@pytest.mark.parametrize("grants", [api.VideoGrants(agent=True), api.VideoGrants(room_list=True)])
def test_a_plain_request_is_not_found(livekit_server, grants):
    jwt = token(livekit_server, grants=grants)

    status, _, _ = http("GET", livekit_server.url + "/agent", headers={"Authorization": f"Bearer {jwt}"})

    assert status == 404
