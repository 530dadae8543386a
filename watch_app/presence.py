"""Worker presence: poll the health URLs admins registered for each agent's workers.

LiveKit has no API that lists workers; a LiveKit Agents worker serves its own HTTP server:
`/` answers 200 "OK" when it is connected to LiveKit (503 otherwise) and `/worker` gives its
agent name, active jobs and load (protobuf JSON, so zero values are left out).

Each request has its own deadline over the whole exchange (WORKER_POLL_TIMEOUT_S, net.py), polls
run with bounded concurrency, and each endpoint's result is written as soon as it is known, by
the caller's thread: an endpoint that hangs, trickles or answers garbage fails its own poll,
recorded with its error, and never the others'. A pass starts no poll after PASS_BUDGET_S, so
it ends inside the task's time limit however many endpoints are slow.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from .models import WorkerEndpoint
from .net import SendFailed, http_request
from .selectors import agent_worker_silence, no_answer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Poll:
    healthy: bool
    error: str = ""
    load: float | None = None
    active_jobs: int | None = None
    agent_name: str = ""


# No poll starts this long after its pass began: with every request bounded by its deadline,
# the pass ends within this plus two deadlines, inside the task's 60 s soft limit (tasks.py).
PASS_BUDGET_S = 40.0


def _poll(url: str, *, allow_private: bool, timeout_s: float, not_after: float) -> Poll | None:
    """One endpoint's poll (`/`, then `/worker`); None when the pass's budget ran out first."""
    if time.monotonic() > not_after:
        return None
    base = url.rstrip("/")
    try:
        http_request(base + "/", allow_private=allow_private, deadline_s=timeout_s)
        answer = http_request(base + "/worker", allow_private=allow_private, deadline_s=timeout_s)
    except SendFailed as exc:
        return Poll(healthy=False, error=exc.message)
    try:
        info = json.loads(answer.body)
        return Poll(
            healthy=True,
            load=float(info.get("worker_load", 0.0)),
            active_jobs=int(info.get("active_jobs", 0)),
            agent_name=str(info.get("agent_name", "")),
        )
    except (ValueError, TypeError, AttributeError):
        return Poll(healthy=False, error="/worker did not answer LiveKit Agents' JSON")


def _record(endpoint: WorkerEndpoint, poll: Poll, now: datetime) -> None:
    endpoint.polled_at = now
    endpoint.healthy = poll.healthy
    endpoint.last_error = poll.error
    if poll.healthy:
        endpoint.answered_at = now
        endpoint.load = poll.load
        endpoint.active_jobs = poll.active_jobs
        endpoint.reported_agent_name = poll.agent_name
    endpoint.save(
        update_fields=[
            "polled_at",
            "healthy",
            "last_error",
            "answered_at",
            "load",
            "active_jobs",
            "reported_agent_name",
        ]
    )


POLL_PASS_KEY = "watch:workers-poll-pass"


def workers_poll(*, endpoint_ids: list[int] | None = None, now: datetime | None = None) -> int:
    """Poll every enabled endpoint (or those given), recording each one's result as it comes;
    returns how many answered. A full pass (beat's) is skipped while another is still running:
    with slow endpoints a pass can outlast the poll interval, and passes piling up on the
    outbound queue would hold up alert deliveries."""
    if endpoint_ids is not None:
        return _poll_pass(endpoint_ids=endpoint_ids, now=now)
    hold_s = PASS_BUDGET_S + 2 * float(settings.WORKER_POLL_TIMEOUT_S)
    if not cache.add(POLL_PASS_KEY, "1", timeout=hold_s):
        logger.info("worker poll skipped: the previous pass is still running")
        return 0
    try:
        return _poll_pass(endpoint_ids=None, now=now)
    finally:
        cache.delete(POLL_PASS_KEY)


def _poll_pass(*, endpoint_ids: list[int] | None, now: datetime | None) -> int:
    query = WorkerEndpoint.objects.filter(enabled=True).select_related("agent")
    if endpoint_ids is not None:
        query = query.filter(pk__in=endpoint_ids)
    endpoints = list(query)
    if not endpoints:
        return 0
    timeout = float(settings.WORKER_POLL_TIMEOUT_S)
    not_after = time.monotonic() + PASS_BUDGET_S
    answered = skipped = 0
    now = now or timezone.now()
    # Silent at the previous poll too: the second signal that the worker is gone.
    was_silent = {e.pk for e in endpoints if e.healthy is False and no_answer(e.last_error)}
    confirmed: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, int(settings.WORKER_POLL_CONCURRENCY))) as pool:
        futures = {
            pool.submit(
                _poll, e.url, allow_private=e.allow_private, timeout_s=timeout, not_after=not_after
            ): e
            for e in endpoints
        }
        for future in as_completed(futures):
            endpoint, poll = futures[future], future.result()
            if poll is None:
                skipped += 1  # its last answer stands; presence calls it stale in time
                continue
            _record(endpoint, poll, now)
            answered += poll.healthy
            if not poll.healthy and no_answer(poll.error) and endpoint.pk in was_silent:
                confirmed.add(endpoint.agent.agent_name)
            if poll.agent_name and poll.agent_name != endpoint.agent.agent_name:
                logger.warning(
                    "worker at %s registers as %r, not %r",
                    endpoint.url,
                    poll.agent_name,
                    endpoint.agent.agent_name,
                    extra={"agent": endpoint.agent.agent_name},
                )
    if skipped:
        logger.warning(
            "worker poll ran out of its %g s budget: %d of %d endpoint(s) not polled this pass "
            "(raise WORKER_POLL_CONCURRENCY)",
            PASS_BUDGET_S,
            skipped,
            len(endpoints),
        )
    if confirmed:
        dead_agents_record(agent_names=confirmed, now=now)
    return answered


def dead_agents_record(*, agent_names: set[str], now: datetime) -> int:
    """Agents of these names whose worker stayed silent two polls in a row: every joined
    dispatch whose agent was on that worker (`agent_worker_silence(...).holds`) is recorded
    dead, so the portal re-dispatches now rather than when LiveKit drops the participant
    (about 20 s). Returns how many."""
    from rooms_app.models import Dispatch, Room
    from rooms_app.services import agent_dead_record

    from .checks import dispatches_check

    recorded = 0
    joined = Dispatch.objects.select_related("room", "agent").filter(
        agent_name__in=agent_names, status=Dispatch.Status.AGENT_JOINED, room__status=Room.Status.ACTIVE
    )
    for dispatch in joined:
        silence = agent_worker_silence(agent_name=dispatch.agent_name, joined_at=dispatch.joined_at, now=now)
        if silence is None or not silence.holds:
            continue
        if agent_dead_record(dispatch=dispatch, reason=silence.reason()) is not None:
            recorded += 1
            logger.warning(
                "agent of dispatch %s recorded dead: %s",
                dispatch.pk,
                silence.described(now),
                extra={"agent": dispatch.agent_name},
            )
    if recorded:
        dispatches_check(now=timezone.now(), settled=True)  # a give-up opens its incident now
    return recorded
