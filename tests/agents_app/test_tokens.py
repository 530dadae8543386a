"""Our claims builder must produce exactly what livekit-api's AccessToken produces."""

from datetime import timedelta

import jwt
import pytest
from livekit.api import AccessToken, TokenVerifier, VideoGrants
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from agents_app.rules import AppliedAgent
from livekit_boundary.tokens import claims_build, token_sign


def agent(name: str, metadata: str, deployment: str = "") -> AppliedAgent:
    return AppliedAgent(name, "rule", metadata, "token", deployment)


KEY, SECRET = "contract-key", "contract-secret-long-enough-for-hs256-0123456789"


def sdk_token(*, identity, room, grants, name="", metadata="", attributes=None, agents=(), ttl_s=600) -> str:
    token = (
        AccessToken(KEY, SECRET)
        .with_identity(identity)
        .with_name(name)
        .with_metadata(metadata)
        .with_grants(VideoGrants(room_join=True, room=room, **grants))
        .with_ttl(timedelta(seconds=ttl_s))
    )
    if attributes:
        token.with_attributes(attributes)
    if agents:
        token.with_room_config(
            RoomConfiguration(
                agents=[
                    RoomAgentDispatch(agent_name=a.agent_name, metadata=a.metadata, deployment=a.deployment)
                    for a in agents
                ]
            )
        )
    return token.to_jwt()


def decoded(token: str) -> dict:
    return jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False}, issuer=KEY)


@pytest.mark.parametrize(
    "case",
    [
        {"identity": "ann", "room": "r1", "grants": {}},
        {
            "identity": "ann",
            "room": "r1",
            "grants": {"can_publish": False, "can_subscribe": True, "can_publish_data": False},
        },
        {
            "identity": "bob",
            "room": "r2",
            "grants": {"hidden": True, "can_update_own_metadata": False},
            "name": "Bob",
            "metadata": '{"a": 1}',
            "attributes": {"tier": "gold", "x": ""},
        },
        {
            "identity": "c",
            "room": "r3",
            "grants": {"can_publish": True},
            "agents": [agent("interviewer", '{"id": "42"}'), agent("notes", "", "eu-prod")],
        },
        {"identity": "d", "room": "r4", "grants": {}, "agents": [agent("", "")]},
    ],
)
def test_claims_equal_the_sdks(case):
    ours = decoded(token_sign(claims_build(**case), api_key=KEY, api_secret=SECRET, ttl_s=600))
    theirs = decoded(sdk_token(**case))
    assert ours["exp"] - ours["nbf"] == 600
    for claims in (ours, theirs):
        claims.pop("nbf"), claims.pop("exp")
    assert ours == theirs
    verified = TokenVerifier(KEY, SECRET).verify(
        token_sign(claims_build(**case), api_key=KEY, api_secret=SECRET, ttl_s=60)
    )
    assert verified.identity == case["identity"] and verified.video.room == case["room"]
