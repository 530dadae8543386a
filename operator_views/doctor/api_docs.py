"""What the API docs say about the doctor's endpoint: a description for the people who call it
and worked examples for the demo client (`manage.py demo_setup`), checked by
`tests/test_api_examples.py`."""

from __future__ import annotations

from dispatchportal.openapi import UNAUTHENTICATED, Call

SUMMARY = "Why is there no agent? The dispatch chain, link by link"
DESCRIPTION = """\
Walks the chain from LiveKit to the agent in the room and marks each link `ok`, `broken` or
`unknown`: 1 LiveKit reachable, 2 rules give the room its agents, 3 the token carried them,
4 the dispatch exists in LiveKit, 5 a worker took the job, 6 the job did not fail, 7 the agent is
in the room, 8 no duplicate or unmanaged agents. At the first broken link, `cause` says why in
plain words and `fix` what to do (for instance: no worker registered with exactly that agent
name, with the close names that were seen).

`status` is `healthy`, `waiting` (before the join deadline: "waiting, N s left"), `broken`, or
`livekit_unavailable` when LiveKit could not be asked: an answer, not an error (200).
`exit_code` is what `manage.py doctor` exits with: 0, 1 or 2.

Ask with `agent=` for one agent only, and `identity=` to evaluate the rules for that participant.
"""

CALLS = (
    Call(
        "Healthy",
        "demo-agent is in room demo-3, as expected",
        200,
        {
            "room_name": "demo-3",
            "agent": None,
            "identity": None,
            "checked_at": "2026-12-03T08:59:44+00:00",
            "livekit_url": "ws://127.0.0.1:7880",
            "room_live": True,
            "status": "healthy",
            "exit_code": 0,
            "summary": "Healthy: 'demo-agent' in room 'demo-3' as expected.",
            "first_broken_link": None,
            "cause": "",
            "fix": "",
            "expected_agents": ["demo-agent"],
            "links": [
                {
                    "number": 1,
                    "key": "livekit",
                    "title": "LiveKit reachable, credentials accepted",
                    "state": "ok",
                    "summary": "LiveKit at ws://127.0.0.1:7880 answered; room is live, created at 08:59:43 UTC (0 s ago), with 0 participant(s) and 1 agent(s)",
                    "details": [],
                    "cause": "",
                    "fix": "",
                },
                {
                    "number": 2,
                    "key": "rules",
                    "title": "Rules give the room its agents, agents enabled",
                    "state": "ok",
                    "summary": "expected: 'demo-agent' by rule 'demo rooms get the demo agent' (token)",
                    "details": [],
                    "cause": "",
                    "fix": "",
                },
                {
                    "number": 3,
                    "key": "token",
                    "title": "Token path: a token from the portal carried the agent, and LiveKit could honour it",
                    "state": "ok",
                    "summary": "informational (the agent is present and running): no token minted for this room yet",
                    "details": [],
                    "cause": "",
                    "fix": "",
                },
                {
                    "number": 4,
                    "key": "dispatch",
                    "title": "Dispatch present in LiveKit",
                    "state": "ok",
                    "summary": "'demo-agent': AD_jeJZEUYQ6ut5, created at 08:59:43 UTC (0 s ago)",
                    "details": [],
                    "cause": "",
                    "fix": "",
                },
                {
                    "number": 5,
                    "key": "job",
                    "title": "Job created: a worker took the dispatch",
                    "state": "ok",
                    "summary": "'demo-agent': job AJ_x25gfJj7qdUe (running)",
                    "details": [],
                    "cause": "",
                    "fix": "",
                },
                {
                    "number": 6,
                    "key": "job_outcome",
                    "title": "Job did not fail or end",
                    "state": "ok",
                    "summary": "'demo-agent': job AJ_x25gfJj7qdUe is running",
                    "details": [],
                    "cause": "",
                    "fix": "",
                },
                {
                    "number": 7,
                    "key": "agent",
                    "title": "Agent participant present",
                    "state": "ok",
                    "summary": "'demo-agent': agent-AJ_x25gfJj7qdUe joined at 08:59:43 UTC (0 s ago)",
                    "details": [],
                    "cause": "",
                    "fix": "",
                },
                {
                    "number": 8,
                    "key": "crowd",
                    "title": "No duplicate or unmanaged agents",
                    "state": "ok",
                    "summary": "1 agent(s) in the room, one per expected name, none unmanaged",
                    "details": [],
                    "cause": "",
                    "fix": "",
                },
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
    Call(
        "Invalid agent name",
        "A name LiveKit would refuse (control characters)",
        400,
        {"error": "invalid", "detail": {"agent": ["must not contain control characters"]}},
    ),
    UNAUTHENTICATED,
)
