"""A foreign client holds the contract: LiveKit's Node server SDK (`livekit-server-sdk`, pinned
in tests/livekit_emulator/js/package-lock.json) makes the same calls (js/contract.mjs) against
the emulator and livekit-server v1.13.5, and every answer is compared field by field, errors
included. Only values that differ on every run (ids, times, the TURN password, the caller's
own token in a 401) are replaced by their shape before the comparison.

Needs node; npm installs the pinned package from the lockfile the first time. Without node the
test skips, or fails under REQUIRE_SERVICES=1."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import node_with_packages

JS_DIR = Path(__file__).resolve().parent / "js"
PACKAGE = JS_DIR / "node_modules" / "livekit-server-sdk" / "package.json"
ID = re.compile(r"^([A-Z]{2}_)[0-9A-Za-z]{12}$")
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
VOLATILE_TIMES = {"creationTime", "creationTimeMs", "createdAt", "startedAt", "updatedAt", "endedAt"}


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with js/ installed from its lockfile when it is not yet."""
    return node_with_packages(JS_DIR, PACKAGE)


def _run(node: str, server: Any) -> dict[str, Any]:
    arguments = {"url": server.url, "key": server.api_key, "secret": server.api_secret, "prefix": "node"}
    done = subprocess.run(
        [node, "contract.mjs", json.dumps(arguments)],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")},
    )
    assert done.returncode == 0, f"node failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def _shape(value: Any, key: str = "") -> Any:
    """The answer with run-specific values replaced by what they look like."""
    if isinstance(value, dict):
        return {k: _shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        shaped = [_shape(v) for v in value]
        # List answers carry no order (the real server's ListDispatch comes out of a Go map
        # and differs from run to run): compare them as sets.
        return sorted(shaped, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, str):
        if key in VOLATILE_TIMES and value not in ("", "0"):
            return "<time>"
        if key == "turnPassword" and len(value) >= 40 and value.isalnum():
            return "<turn password>"
        if match := ID.match(value):
            return f"{match.group(1)}<id>"
        return JWT.sub("<the caller's token>", value)
    return value


def test_the_node_server_sdk_sees_the_same_answers_from_both_servers(
    node, livekit_emulator_reset, real_livekit
):
    emulator = _shape(_run(node, livekit_emulator_reset))
    real = _shape(_run(node, real_livekit))

    assert list(emulator) == list(real)
    different = {
        step: {"emulator": emulator[step], "real": real[step]}
        for step in real
        if emulator[step] != real[step]
    }
    assert different == {}
    # The comparison covered answers and errors alike.
    assert real["createRoomEmptyName"]["ok"]["name"] == ""
    assert real["listDispatchNowhere"]["error"]["status"] == 503
    assert real["forgedListRooms"]["error"]["status"] == 401
