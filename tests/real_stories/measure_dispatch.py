"""Latency of a dispatch on LiveKit's own server, measured, never asserted: run by
`bench/real_dispatch_bench.py` (pytest collects this file only when it is named).

Over ROOMS rooms per path, with one real worker (jobs as processes, as in production), from the
portal's dispatch call to (a) the job listed RUNNING by LiveKit (ListDispatch), (b) the agent's
participant ACTIVE in the room (WebRTC connected), (c) the portal's ledger saying agent_joined:
- explicit: POST /api/v1/dispatches -> the portal's task -> CreateDispatch;
- token: POST /api/v1/token, then a participant joins with it (the join creates the room and
  LiveKit dispatches the token's agent).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
from livekit import api

from rooms_app.models import Dispatch
from tests.factories import AgentFactory, RuleFactory, make_client

pytestmark = [pytest.mark.django_db(transaction=True)]
ROOMS = int(os.environ.get("REAL_BENCH_ROOMS", "20"))
ACTIVE = api.ParticipantInfo.State.ACTIVE


def _times(stack, room: str, started: float, timeout: float = 30.0) -> dict[str, float]:
    seen: dict[str, float] = {}
    deadline = started + timeout
    while len(seen) < 3 and time.monotonic() < deadline:
        now = time.monotonic() - started
        if "job running" not in seen and any(
            j.state.status == api.JobStatus.JS_RUNNING for d in stack.dispatches(room) for j in d.state.jobs
        ):
            seen["job running"] = now
        if "agent present" not in seen and any(p.state == ACTIVE for p in stack.agents(room)):
            seen["agent present"] = now
        if (
            "ledger agent_joined" not in seen
            and Dispatch.objects.filter(room__name=room, status="agent_joined").exists()
        ):
            seen["ledger agent_joined"] = now
        time.sleep(0.02)
    return seen


def _report(path: str, samples: list[dict[str, float]]) -> None:
    for what in ("job running", "agent present", "ledger agent_joined"):
        values = sorted(s[what] * 1000 for s in samples if what in s)
        missing = len(samples) - len(values)
        if len(values) < 2:
            print(f"  {path:8} {what:20} n={len(values)} (missing {missing})")
            continue
        cuts = statistics.quantiles(values, n=20, method="inclusive")
        print(
            f"  {path:8} {what:20} n={len(values):3}  p50 {statistics.median(values):7.0f} ms  "
            f"p95 {cuts[18]:7.0f} ms  max {values[-1]:7.0f} ms"
            + (f"  (missing {missing})" if missing else "")
        )


def test_measure_dispatch_latency(stack, agent_worker):
    agent = AgentFactory(agent_name="bench-agent", join_deadline_s=60)
    RuleFactory(name="token rooms", agent=agent, room_match_value="tok-*", delivery="token")
    _, key = make_client("bench", rooms=["tok-*", "exp-*", "warm-*"], agent_names=["bench-agent"])
    agent_worker(agent_name="bench-agent")
    samples: dict[str, list[dict[str, float]]] = {"explicit": [], "token": []}

    def explicit(room: str) -> dict[str, float]:
        started = time.monotonic()
        stack.portal("/api/v1/dispatches", key, {"room_name": room, "agent_name": "bench-agent"})
        return _times(stack, room, started)

    def token(room: str) -> dict[str, float]:
        started = time.monotonic()
        stack.join(stack.token(key, room, "bench-user"))
        return _times(stack, room, started)

    first = explicit("warm-0")  # the worker's first job, reported apart
    stack.lk("room.delete_room", api.DeleteRoomRequest(room="warm-0"))
    for n in range(ROOMS):
        for path, run, room in (("explicit", explicit, f"exp-{n}"), ("token", token, f"tok-{n}")):
            samples[path].append(run(room))
            stack.lk("room.delete_room", api.DeleteRoomRequest(room=room))  # ends the job process
    print(
        f"\nreal livekit-server, one livekit-agents worker, {ROOMS} rooms per path (ms from the portal call):"
    )
    print(f"  first job on a fresh worker (explicit): { {k: round(v * 1000) for k, v in first.items()} }")
    for path, values in samples.items():
        _report(path, values)
