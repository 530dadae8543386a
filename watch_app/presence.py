"""Worker presence: poll the health URLs admins registered for each agent's workers.

LiveKit has no API that lists workers; a LiveKit Agents worker serves its own HTTP server:
`/` answers 200 "OK" when it is connected to LiveKit (503 otherwise) and `/worker` gives its
agent name, active jobs and load (protobuf JSON, so zero values are left out). Polls run with a
timeout each and bounded concurrency; the answers are written by the caller's thread.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from .models import WorkerEndpoint
from .net import SendFailed, http_request

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Poll:
    healthy: bool
    error: str = ""
    load: float | None = None
    active_jobs: int | None = None
    agent_name: str = ""


def _poll(url: str, *, allow_private: bool, timeout_s: float) -> Poll:
    base = url.rstrip("/")
    try:
        http_request(base + "/", allow_private=allow_private, timeout_s=timeout_s)
        answer = http_request(base + "/worker", allow_private=allow_private, timeout_s=timeout_s)
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


def workers_poll(*, endpoint_ids: list[int] | None = None, now: datetime | None = None) -> int:
    """Poll every enabled endpoint (or those given); returns how many answered."""
    endpoints = list(WorkerEndpoint.objects.filter(enabled=True).select_related("agent"))
    if endpoint_ids is not None:
        endpoints = [e for e in endpoints if e.pk in endpoint_ids]
    if not endpoints:
        return 0
    timeout = float(settings.WORKER_POLL_TIMEOUT_S)
    with ThreadPoolExecutor(max_workers=max(1, int(settings.WORKER_POLL_CONCURRENCY))) as pool:
        polls = list(
            pool.map(lambda e: _poll(e.url, allow_private=e.allow_private, timeout_s=timeout), endpoints)
        )
    now = now or timezone.now()
    for endpoint, poll in zip(endpoints, polls, strict=True):
        _record(endpoint, poll, now)
        if poll.agent_name and poll.agent_name != endpoint.agent.agent_name:
            logger.warning(
                "worker at %s registers as %r, not %r",
                endpoint.url,
                poll.agent_name,
                endpoint.agent.agent_name,
                extra={"agent": endpoint.agent.agent_name},
            )
    return sum(p.healthy for p in polls)
