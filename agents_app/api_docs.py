"""What the API docs say about the token and explain endpoints: descriptions for the people who
call them, and worked examples for the demo client (`manage.py demo_setup`: rooms `demo-*`,
agent `demo-agent`, rule "demo rooms get the demo agent"). `tests/test_api_examples.py` sends
every example request with that client's key and checks the documented status and shape."""

from __future__ import annotations

from dispatchportal.openapi import UNAUTHENTICATED, Call

TOKEN_SUMMARY = "Mint a participant token (LiveKit's standard token endpoint)"
TOKEN_DESCRIPTION = """\
Gives your frontend what it needs to join a LiveKit room: `server_url` and `participant_token`.
The request and answer follow LiveKit's standard token-endpoint format, so livekit-client's
`TokenSource.endpoint(url, {headers: {Authorization: 'Bearer dpk_...'}})` calls it unchanged.

The portal's dispatch rules decide which agents come to the room. `dispatch.agents` lists them:
the rule that gave each one, the job metadata the agent receives (`ctx.job.metadata`), and how it
travels. `token` means inside this token: LiveKit dispatches the agent when this join creates the
room. `explicit` means the portal asks LiveKit itself, for instance because the room was
already live (`dispatch.room_exists`), when LiveKit ignores a token's agents.

Follow the agent with `GET /api/v1/rooms/{room_name}` (`ready` turns true once it has joined).
If it does not come, `GET /api/v1/rooms/{room_name}/diagnosis` says why.

Everything stays within your key's scope: its room patterns, the agents it may name in
`room_config.agents`, its grant ceiling and its maximum `ttl`. Anything outside that is refused
with 403 naming the field, and nothing is minted. Omit `room_name` and the room is named by your
client's room-name template (`demo-<12 hex>` for the demo client). Rate-limited per key: 429 with
`Retry-After`.
"""

_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lIjoiQW5uIiwidmlkZW8iOnsicm9vbUpvaW4iOnRydWUsInJvb20i"
    "OiJkZW1vLTEifSwic3ViIjoiYW5uIn0.O6_UeNnoaPucuaca21DRLM3i_TnuS2zR3CQR4j5F7H8"
)


def _minted(room: str, identity: str) -> dict:
    return {
        "server_url": "ws://127.0.0.1:7880",
        "participant_token": _TOKEN,
        "room_name": room,
        "participant_identity": identity,
        "dispatch": {
            "room_exists": False,
            "agents": [
                {
                    "agent_name": "demo-agent",
                    "rule": "demo rooms get the demo agent",
                    "metadata": f'{{"greeting":"hello","room":"{room}","user":"{identity}"}}',
                    "delivery": "token",
                }
            ],
        },
    }


TOKEN_CALLS = (
    Call(
        "Join a demo room",
        "A customer joins room demo-1; the demo rule brings demo-agent",
        201,
        _minted("demo-1", "ann"),
        request={
            "room_name": "demo-1",
            "participant_identity": "ann",
            "participant_name": "Ann",
            "participant_attributes": {"role": "customer", "language": "en"},
        },
        description="Attributes reach the participant (and rules may match on them).",
    ),
    Call(
        "Let the portal name the room",
        "No room_name: the client's template names the room",
        201,
        _minted("demo-3f9c2a7b41d0", "carol"),
        request={"participant_identity": "carol", "participant_name": "Carol"},
    ),
    Call(
        "Listen only, for an hour",
        "Fewer grants and a shorter life than the client's defaults",
        201,
        _minted("demo-2", "dave"),
        request={
            "room_name": "demo-2",
            "participant_identity": "dave",
            "ttl": 3600,
            "grants": {"can_publish": False},
        },
    ),
    Call(
        "Room outside the key's patterns",
        "Refused: the demo key covers demo-* rooms only",
        403,
        {
            "error": "forbidden",
            "detail": {"room_name": ["room 'support-1' is outside this client's room patterns"]},
        },
        request={"room_name": "support-1", "participant_identity": "ann"},
    ),
    Call(
        "Grant above the ceiling",
        "Refused: the demo key may not mint hidden participants",
        403,
        {
            "error": "forbidden",
            "detail": {"grants.hidden": ["'hidden' is above this client's grant ceiling"]},
        },
        request={"room_name": "demo-1", "participant_identity": "ann", "grants": {"hidden": True}},
    ),
    Call(
        "Wrong type",
        "Refused: the field at fault is named",
        400,
        {"error": "invalid", "detail": {"participant_identity": ["Must be a string."]}},
        request={"room_name": "demo-1", "participant_identity": 42},
    ),
    UNAUTHENTICATED,
    Call(
        "Body not JSON",
        "Content-Type other than application/json",
        415,
        {"error": "unsupported_media_type", "detail": 'Unsupported media type "text/plain" in request.'},
    ),
    Call(
        "Over the rate limit",
        "More requests this minute than the client's limit; see Retry-After",
        429,
        {"error": "rate_limited", "detail": "over the client's rate limit; retry in 12 s"},
    ),
)

EXPLAIN_SUMMARY = "Explain which agents a join would get, and why"
EXPLAIN_DESCRIPTION = """\
Runs the dispatch rules for a sample join without minting anything: every rule's verdict
(`applied`, `shadowed` by an earlier rule for the same agent, `agent_disabled`, `not_matched`
with the reason, `not_evaluated` after a stop rule, `disabled`), the agents the join gets, the
`RoomConfiguration` a token would carry, and the token's claims.

Put an unsaved rule in `draft_rule` to see what it would change before an admin saves it.

With a client key you see the rules whose room match takes the room you ask about, and may name
only your own agents in a draft. A staff session needs view permission on dispatch rules.
"""

_DEMO_AGENT = {
    "agent_name": "demo-agent",
    "rule": "demo rooms get the demo agent",
    "metadata": '{"greeting":"hello","room":"demo-1","user":"ann"}',
    "delivery": "token",
    "deployment": "",
    "attributes": {},
}

EXPLAIN_CALLS = (
    Call(
        "Which agents does demo-1 get?",
        "The demo rule applies; the token would carry demo-agent",
        200,
        {
            "room_name": "demo-1",
            "participant_identity": "ann",
            "rules": [
                {
                    "rule": "demo rooms get the demo agent",
                    "agent_name": "demo-agent",
                    "outcome": "applied",
                    "reason": "matched glob 'demo-*'",
                    "stop": False,
                }
            ],
            "agents": [_DEMO_AGENT],
            "room_config": {
                "agents": [
                    {
                        "agent_name": "demo-agent",
                        "metadata": '{"greeting":"hello","room":"demo-1","user":"ann"}',
                    }
                ]
            },
            "token_claims": {
                "video": {
                    "roomJoin": True,
                    "room": "demo-1",
                    "canPublish": True,
                    "canSubscribe": True,
                    "canPublishData": True,
                },
                "attributes": {"role": "customer"},
                "roomConfig": {
                    "agents": [
                        {
                            "agentName": "demo-agent",
                            "metadata": '{"greeting":"hello","room":"demo-1","user":"ann"}',
                        }
                    ]
                },
                "sub": "ann",
            },
        },
        request={
            "room_name": "demo-1",
            "participant_identity": "ann",
            "participant_attributes": {"role": "customer"},
        },
    ),
    Call(
        "Try an unsaved rule",
        "A draft rule for demo-vip-* rooms comes first and shadows the demo rule",
        200,
        {
            "room_name": "demo-vip-1",
            "participant_identity": "ann",
            "rules": [
                {
                    "rule": "vip rooms",
                    "agent_name": "demo-agent",
                    "outcome": "applied",
                    "reason": "matched prefix 'demo-vip-'",
                    "stop": False,
                },
                {
                    "rule": "demo rooms get the demo agent",
                    "agent_name": "demo-agent",
                    "outcome": "shadowed",
                    "reason": "agent already applied by rule 'vip rooms'",
                    "stop": False,
                },
            ],
            "agents": [
                {
                    **_DEMO_AGENT,
                    "rule": "vip rooms",
                    "metadata": '{"greeting":"hello","tier":"vip"}',
                    "delivery": "explicit",
                }
            ],
            "room_config": {"agents": []},
            "token_claims": {
                "video": {
                    "roomJoin": True,
                    "room": "demo-vip-1",
                    "canPublish": True,
                    "canSubscribe": True,
                    "canPublishData": True,
                },
                "sub": "ann",
            },
        },
        request={
            "room_name": "demo-vip-1",
            "participant_identity": "ann",
            "draft_rule": {
                "name": "vip rooms",
                "agent_name": "demo-agent",
                "priority": 10,
                "room": {"kind": "prefix", "value": "demo-vip-"},
                "metadata_template": {"tier": "vip"},
                "delivery": "explicit",
            },
        },
        description="Explicit delivery: the portal would dispatch the agent itself, so the token carries none.",
    ),
    Call(
        "Draft rule with a bad regex",
        "Refused: the draft's field at fault is named (as the rule's field, room_match_value)",
        400,
        {
            "error": "invalid",
            "detail": {
                "draft_rule.room_match_value": [
                    "regex does not compile: missing ), unterminated subpattern at position 0"
                ]
            },
        },
        request={
            "room_name": "demo-1",
            "draft_rule": {"agent_name": "demo-agent", "room": {"kind": "regex", "value": "(demo"}},
        },
    ),
    Call(
        "Room outside the key's patterns",
        "Refused: the demo key covers demo-* rooms only",
        403,
        {
            "error": "forbidden",
            "detail": {"room_name": ["room 'support-1' is outside this client's room patterns"]},
        },
        request={"room_name": "support-1"},
    ),
    UNAUTHENTICATED,
)
