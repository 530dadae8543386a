"""What the API docs say about dispatches, rooms and the webhook receiver: descriptions for the
people who call them, and worked examples for the demo client (`manage.py demo_setup`: rooms
`demo-*`, agent `demo-agent`). `tests/test_api_examples.py` sends every example request with
that client's key (the webhook's signed with the LiveKit key, as LiveKit signs it) and checks
the documented status and shape."""

from __future__ import annotations

from typing import Any

from dispatchportal.openapi import UNAUTHENTICATED, Call

_AT = "2026-12-03T08:59:43.3326Z"
_REQUESTED_AT = "2026-12-03T08:59:43.3439Z"


def _dispatch(**changes: Any) -> dict[str, Any]:
    """A dispatch as the API answers it: demo-agent asked for in room demo-3, LiveKit has it."""
    body: dict[str, Any] = {
        "id": 41,
        "room_name": "demo-3",
        "agent_name": "demo-agent",
        "status": "requested",
        "source": "api",
        "delivery": "explicit",
        "attempt": 1,
        "metadata": '{"topic": "billing"}',
        "livekit_dispatch_id": "AD_jeJZEUYQ6ut5",
        "participant_identity": "",
        "last_error": "",
        "created_at": _AT,
        "requested_at": _REQUESTED_AT,
        "job_assigned_at": None,
        "joined_at": None,
        "left_at": None,
        "ended_at": None,
        "deadline_at": "2026-12-03T08:59:58.3472Z",
        "replaces": None,
        "replaced_by": None,
        "events": [
            {"at": _AT, "previous_status": "", "status": "pending", "detail": "Dispatch API by demo"},
            {
                "at": _REQUESTED_AT,
                "previous_status": "pending",
                "status": "requested",
                "detail": "CreateDispatch answered: AD_jeJZEUYQ6ut5",
            },
        ],
        "timeline": [
            {
                "key": "trigger",
                "label": "Asked for through the API",
                "at": _AT,
                "state": "done",
                "detail": "by demo",
                "since_previous_s": None,
            },
            {
                "key": "requested",
                "label": "Dispatch requested",
                "at": _REQUESTED_AT,
                "state": "done",
                "detail": "AD_jeJZEUYQ6ut5",
                "since_previous_s": 0.011,
            },
            {
                "key": "job_assigned",
                "label": "Job assigned to a worker",
                "at": None,
                "state": "waiting",
                "detail": "",
                "since_previous_s": None,
            },
            {
                "key": "joined",
                "label": "Agent joined",
                "at": None,
                "state": "waiting",
                "detail": "join deadline 08:59:58 UTC",
                "since_previous_s": None,
            },
        ],
    }
    body.update(changes)
    return body


DISPATCH_CREATE_SUMMARY = "Ask for an agent in a room"
DISPATCH_CREATE_DESCRIPTION = """\
Dispatches one of your agents to a room now, through LiveKit's AgentDispatch API, whether or not
anyone has joined yet: for a room created by another app or SIP, or to add an agent mid-call.
The answer, 202, is the dispatch: `status` is `requested` once LiveKit has it. Follow it with
`GET /api/v1/dispatches/{id}` (`job_assigned`, then `agent_joined`) or with
`GET /api/v1/rooms/{room_name}`.

At most one live dispatch per agent per room: if the agent already has one (from a token, a rule
or an earlier call), nothing is created and the answer is 409 `already_dispatched` with that
dispatch. `metadata_applied` is false when the metadata you sent differs from the live
dispatch's. It was not applied: cancel the dispatch and ask again to change it.

While LiveKit is unreachable the dispatch waits (`status` stays `pending`) and is sent when
LiveKit is back; it never fails for an outage.
"""

DISPATCH_CREATE_CALLS = (
    Call(
        "Dispatch the demo agent",
        "demo-agent to room demo-3, with job metadata",
        202,
        _dispatch(),
        request={"room_name": "demo-3", "agent_name": "demo-agent", "metadata": '{"topic": "billing"}'},
    ),
    Call(
        "Already dispatched",
        "The same agent again: nothing created",
        409,
        {
            "error": "already_dispatched",
            "detail": "'demo-agent' already has a live dispatch in 'demo-3' (#41, requested, from dispatch api): "
            "nothing was created",
            "metadata_applied": True,
            "dispatch": _dispatch(
                events=[
                    *_dispatch()["events"],
                    {
                        "at": "2026-12-03T08:59:43.3666Z",
                        "previous_status": "requested",
                        "status": "requested",
                        "detail": "Dispatch API: demo asked for 'demo-agent' again; answered 409, nothing created",
                    },
                ]
            ),
        },
        request={"room_name": "demo-3", "agent_name": "demo-agent"},
        description="Sent after the first example: the agent already has a live dispatch in demo-3.",
    ),
    Call(
        "Unknown agent",
        "An agent that does not exist, or one your key may not name (answered alike)",
        404,
        {"error": "not_found", "detail": {"agent_name": ["unknown agent 'support-agent'"]}},
        request={"room_name": "demo-3", "agent_name": "support-agent"},
    ),
    Call(
        "Room outside the key's patterns",
        "Refused: the demo key covers demo-* rooms only",
        403,
        {
            "error": "forbidden",
            "detail": {"room_name": ["room 'support-1' is outside this client's room patterns"]},
        },
        request={"room_name": "support-1", "agent_name": "demo-agent"},
    ),
    Call(
        "Missing field",
        "Refused: the field at fault is named",
        400,
        {"error": "invalid", "detail": {"agent_name": ["This field is required."]}},
        request={"room_name": "demo-3"},
    ),
    UNAUTHENTICATED,
)

DISPATCH_RETRIEVE_SUMMARY = "Follow a dispatch until the agent joins"
DISPATCH_RETRIEVE_DESCRIPTION = """\
One dispatch with its recorded events and its timeline: the token or trigger, dispatch requested,
job assigned to a worker, then the agent joined or the verdict, with the seconds between steps.
`status` goes `pending` → `requested` → `job_assigned` → `agent_joined`, or ends with the reason
it stopped: `no_worker` (no worker registered with that agent name), `failed`, `timed_out`,
`cancelled` or `room_closed`. A failed attempt that is retried names the next one in
`replaced_by`.
"""

DISPATCH_RETRIEVE_CALLS = (
    Call("A dispatch on its way", "Requested; waiting for a worker to take the job", 200, _dispatch()),
    Call(
        "No such dispatch",
        "An id that does not exist, or a dispatch outside your rooms (answered alike)",
        404,
        {"error": "not_found", "detail": "no dispatch 999999"},
    ),
    UNAUTHENTICATED,
)

DISPATCH_CANCEL_SUMMARY = "Cancel a dispatch and remove its agent"
DISPATCH_CANCEL_DESCRIPTION = """\
Cancels a live dispatch: the LiveKit dispatch is deleted and its agent, if it joined, removed
from the room. A cancel is final: a late join, reconcile or an older token never brings the agent
back. 409 when the dispatch had already ended.
"""

DISPATCH_CANCEL_CALLS = (
    Call(
        "Cancelled",
        "The dispatch with its verdict",
        202,
        _dispatch(
            status="cancelled",
            ended_at="2026-12-03T08:59:43.4088Z",
            deadline_at=None,
            events=[
                *_dispatch()["events"],
                {
                    "at": "2026-12-03T08:59:43.4088Z",
                    "previous_status": "requested",
                    "status": "cancelled",
                    "detail": "cancelled by demo",
                },
            ],
            timeline=[
                *_dispatch()["timeline"][:2],
                {
                    "key": "job_assigned",
                    "label": "Job assigned to a worker",
                    "at": None,
                    "state": "skipped",
                    "detail": "",
                    "since_previous_s": None,
                },
                {
                    "key": "verdict",
                    "label": "Cancelled",
                    "at": "2026-12-03T08:59:43.4088Z",
                    "state": "failed",
                    "detail": "",
                    "since_previous_s": 0.065,
                },
            ],
        ),
    ),
    Call(
        "Already ended",
        "Cancelling a dispatch that had already ended",
        409,
        {"error": "conflict", "detail": "dispatch 41 has already ended (cancelled)"},
    ),
    Call(
        "No such dispatch",
        "An id that does not exist, or a dispatch outside your rooms (answered alike)",
        404,
        {"error": "not_found", "detail": "no dispatch 999999"},
    ),
    UNAUTHENTICATED,
)

ROOM_SUMMARY = "Is my agent there? The agents a room should have, and whether they joined"
ROOM_DESCRIPTION = """\
Each agent the portal wants in the room (from tokens, rules or the Dispatch API) with its
dispatch's status, its participant identity and when it joined; `ready` is true once every one
has joined.

A browser can miss the agent's `participantConnected` event when the agent joined first. Check
`room.remoteParticipants` after connecting, listen for `ParticipantConnected`, and when in doubt
ask this endpoint. A room the portal knows nothing about yet answers `status: unknown` with no
agents.
"""

ROOM_CALLS = (
    Call(
        "Agent on its way",
        "A token was minted for demo-1; nobody has joined yet",
        200,
        {
            "room_name": "demo-1",
            "status": "pending",
            "sid": "",
            "num_participants": 0,
            "ready": False,
            "agents": [
                {
                    "agent_name": "demo-agent",
                    "status": "pending",
                    "dispatch_id": 40,
                    "attempt": 1,
                    "source": "token",
                    "participant_identity": "",
                    "joined_at": None,
                    "last_error": "",
                    "waiting_for_livekit_since": None,
                    "agents_removed": [],
                }
            ],
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
    ),
    UNAUTHENTICATED,
)

WEBHOOK_SUMMARY = "LiveKit's webhooks (for LiveKit, not for clients)"
WEBHOOK_DESCRIPTION = """\
Point LiveKit's webhook configuration here (`webhook.urls` on a self-hosted server, the project's
webhook settings on LiveKit Cloud), signed with the API key the portal uses. Every event is
verified (the `Authorization` JWT and the body's SHA-256), recorded once (redeliveries are
answered `duplicate: true`) and applied to the dispatch ledger: rooms started and finished,
agents joined and left. Webhooks are optional: the reconcile schedule catches up without them,
more slowly.
"""

WEBHOOK_CALLS = (
    Call(
        "Room started",
        "LiveKit reports room demo-1",
        200,
        {"ok": True, "event": "room_started", "id": "EV_3MZb8x9kNhQp", "duplicate": False},
        request={
            "event": "room_started",
            "id": "EV_3MZb8x9kNhQp",
            "createdAt": "1796288383",
            "room": {"sid": "RM_tT6xQ9jWcFzv", "name": "demo-1", "creationTime": "1796288383"},
        },
        description="Signed by LiveKit: Authorization carries a JWT with the body's SHA-256.",
        media_type="application/webhook+json",
    ),
    Call(
        "Bad signature",
        "Not signed with the portal's LiveKit key: nothing recorded",
        401,
        {"error": "unauthenticated", "detail": "webhook signature invalid"},
    ),
)
