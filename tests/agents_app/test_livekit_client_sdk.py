"""LiveKit's own JavaScript client SDK against the token endpoint, unchanged.

Runs the real `livekit-client` npm package under node (`tests/js/token_source.mjs`) against a
live server, calling `TokenSource.endpoint(url, {headers}).fetch({...})` exactly as a
frontend does. Needs node; npm installs the pinned package from `tests/js/package-lock.json`
the first time. Without node the tests skip, or fail under REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from livekit.api import TokenVerifier

from tests.factories import AgentFactory, RuleFactory, make_client
from tests.support import node_with_packages

JS_DIR = Path(__file__).resolve().parent.parent / "js"
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
# PyJWT warns about HMAC secrets under 32 bytes; the dev default "secret" is one.
API_KEY = "sdk-test-key"
API_SECRET = "sdk-test-secret-long-enough-for-hs256-0123456789"


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with tests/js installed from its lockfile when it is not yet."""
    return node_with_packages(JS_DIR, JS_DIR / "node_modules" / "livekit-client" / "package.json")


@pytest.fixture
def livekit_keys(settings) -> None:
    # The live server runs in this process, so the override reaches the view too.
    settings.LIVEKIT_API_KEY = API_KEY
    settings.LIVEKIT_API_SECRET = API_SECRET


def token_source_fetch(node: str, url: str, key: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run livekit-client's TokenSource.endpoint(...).fetch(options); its outcome and the
    request it put on the wire."""
    done = subprocess.run(
        [node, "token_source.mjs", json.dumps({"url": url, "key": key, "options": options})],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"node failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.usefixtures("livekit_keys")
def test_frontend_gets_a_token_with_the_requested_agent(node, live_server, transactional_db, settings):
    AgentFactory(agent_name="x")
    greeter = AgentFactory(agent_name="greeter", default_metadata={"greeting": "hi"})
    RuleFactory(agent=greeter, room_match_kind="prefix", room_match_value="support-")
    _, key = make_client(rooms=["support-*"], agent_names=["x"], client_agents=True)

    outcome = token_source_fetch(
        node,
        f"{live_server.url}/api/v1/token",
        key,
        {
            "roomName": "support-42",
            "participantIdentity": "alice",
            "participantName": "Alice",
            "agentName": "x",
            "agentMetadata": '{"topic": "billing"}',
        },
    )

    assert outcome["ok"], outcome
    # What the SDK sends: proto field names, only the fields set, agent under room_config.
    assert outcome["request"]["method"] == "POST"
    assert outcome["request"]["body"] == {
        "room_name": "support-42",
        "participant_identity": "alice",
        "participant_name": "Alice",
        "room_config": {"agents": [{"agent_name": "x", "metadata": '{"topic": "billing"}'}]},
    }
    response = outcome["response"]
    assert response["serverUrl"] == settings.PUBLIC_LIVEKIT_URL
    claims = TokenVerifier(API_KEY, API_SECRET).verify(response["participantToken"])
    assert claims.identity == "alice"
    assert claims.name == "Alice"
    assert claims.video.room_join is True
    assert claims.video.room == "support-42"
    agents = {a.agent_name: a.metadata for a in claims.room_config.agents}
    assert agents == {"greeter": '{"greeting":"hi"}', "x": '{"topic": "billing"}'}


@pytest.mark.usefixtures("livekit_keys")
def test_frontend_asking_for_an_agent_it_may_not_have_gets_403(node, live_server, transactional_db):
    AgentFactory(agent_name="x")
    AgentFactory(agent_name="billing-bot")
    _, key = make_client(rooms=["support-*"], agent_names=["x"], client_agents=True)

    outcome = token_source_fetch(
        node,
        f"{live_server.url}/api/v1/token",
        key,
        {"roomName": "support-42", "participantIdentity": "alice", "agentName": "billing-bot"},
    )

    assert not outcome["ok"]
    # The SDK's message carries the status and the portal's JSON error body.
    status_and_body = outcome["error"].split("received ", 1)[1]
    status, _, body = status_and_body.partition(" / ")
    assert status == "403"
    assert json.loads(body) == {
        "error": "forbidden",
        "detail": {"room_config.agents": ["agent 'billing-bot' is not allowed for this client"]},
    }
