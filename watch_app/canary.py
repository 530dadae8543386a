"""Canary dispatches: on each agent's schedule, dispatch it to a fresh probe room of the reserved
prefix, time CreateDispatch -> job -> agent joined, then delete the room.

A canary talks to LiveKit directly and writes only CanaryRun rows: probe rooms are never in the
dispatch ledger (webhooks and reconcile skip the prefix), no rule matches them, and no client
may use them. Times are read by polling LiveKit every POLL_S, so they are accurate to about that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from agents_app.models import Agent
from dispatchportal.reserved import CANARY_ROOM_PREFIX
from dispatchportal.stats import percentile
from livekit_boundary.client import LiveKit, LiveKitError, livekit_run

from . import metrics
from .alerts import incident_resolve, incident_set
from .models import CanaryRun, CanarySchedule

logger = logging.getLogger(__name__)

POLL_S = 0.1
ACTIVE = 2  # ParticipantInfo.State.ACTIVE
TASK_NAME = "canary.run"
P95_WINDOW = 20


def canary_room_name(agent_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", agent_name.lower()).strip("-")[:60] or "unnamed"
    return f"{CANARY_ROOM_PREFIX}{slug}-{secrets.token_hex(4)}"


def canary_schedule_save(*, schedule: CanarySchedule) -> CanarySchedule:
    """Save a canary and keep its django-celery-beat task in step (interval, enabled)."""
    with transaction.atomic():
        schedule.save()
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=schedule.every_s, period=IntervalSchedule.SECONDS
        )
        fields = {
            "task": TASK_NAME,
            "interval": interval,
            "kwargs": json.dumps({"agent_id": schedule.agent_id}),
            "enabled": schedule.enabled and schedule.agent.enabled,
            "expire_seconds": schedule.every_s,
            "description": f"Canary dispatch of '{schedule.agent.agent_name}' (edit it under Canary schedules).",
        }
        task = schedule.periodic_task
        if task is None:
            task = PeriodicTask.objects.create(
                name=f"Canary: {schedule.agent.agent_name or '(unnamed)'}", **fields
            )
            CanarySchedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
            schedule.periodic_task = task
        else:
            for key, value in fields.items():
                setattr(task, key, value)
            task.save()  # django-celery-beat bumps its change marker: beat reloads
    return schedule


def canary_schedule_delete(*, schedule: CanarySchedule) -> None:
    with transaction.atomic():
        if schedule.periodic_task_id:
            PeriodicTask.objects.filter(pk=schedule.periodic_task_id).delete()
        schedule.delete()


async def _probe(
    client: LiveKit, *, room: str, agent_name: str, timeout_s: float, out: dict[str, Any]
) -> None:
    """Fill `out` with times (s from the CreateDispatch call) and ids; raise on LiveKit errors."""
    start = time.monotonic()
    dispatch = await client.create_dispatch(room, agent_name, json.dumps({"canary": True}))
    out["dispatch_s"] = time.monotonic() - start
    out["livekit_dispatch_id"] = dispatch.id
    deadline = start + timeout_s
    while time.monotonic() < deadline:
        if out.get("job_s") is None:
            jobs = [j for d in await client.list_dispatches(room) if d.id == dispatch.id for j in d.jobs]
            if jobs:
                out["job_s"] = time.monotonic() - start
                out["job_id"] = jobs[0].id
            failed = [j for j in jobs if j.status == "failed"]
            if failed:
                out["error"] = f"job {failed[0].id} failed: {failed[0].error or 'no error given'}"
                return
        # ACTIVE: its media transport is connected, so the agent is really in the room.
        agents = [
            p
            for p in await client.list_participants(room)
            if p.agent_name == agent_name and p.state == ACTIVE
        ]
        if agents:
            out["join_s"] = time.monotonic() - start
            if out.get("job_s") is None:  # the job and the join fell between two polls
                out["job_s"] = out["join_s"]
                jobs = [j for d in await client.list_dispatches(room) if d.id == dispatch.id for j in d.jobs]
                out["job_id"] = jobs[0].id if jobs else agents[0].identity.removeprefix("agent-")
            return
        await asyncio.sleep(POLL_S)
    out["error"] = (
        f"no worker registered as '{agent_name}' took the job within {timeout_s:g} s"
        if out.get("job_s") is None
        else f"job {out.get('job_id', '?')} was assigned but the agent did not join within {timeout_s:g} s"
    )


def canary_run(*, agent_id: int, now: datetime | None = None) -> CanaryRun | None:
    """One canary of one agent: probe, record, delete the room, check the alerts."""
    schedule = CanarySchedule.objects.select_related("agent").filter(agent_id=agent_id).first()
    agent = schedule.agent if schedule else Agent.objects.filter(pk=agent_id).first()
    if agent is None:
        return None
    timeout_s = float(schedule.join_timeout_s if schedule else 20)
    room = canary_room_name(agent.agent_name)
    run = CanaryRun.objects.create(
        agent_name=agent.agent_name, room_name=room, started_at=now or timezone.now()
    )
    out: dict[str, Any] = {}

    async def probe_then_delete(client: LiveKit) -> None:
        try:
            await _probe(client, room=room, agent_name=agent.agent_name, timeout_s=timeout_s, out=out)
        finally:
            try:
                await client.delete_room(room)
            except LiveKitError as exc:  # the room empties itself later; say so on the run
                out["cleanup_error"] = exc.message

    try:
        livekit_run(probe_then_delete)
    except LiveKitError as exc:
        out.setdefault("error", exc.message)
    success = out.get("join_s") is not None and not out.get("error")
    run.status = CanaryRun.Status.SUCCESS if success else CanaryRun.Status.FAILED
    run.error = out.get("error", "") + (
        f" (room not deleted: {out['cleanup_error']})" if "cleanup_error" in out else ""
    )
    for key in ("dispatch_s", "job_s", "join_s"):
        setattr(run, key, round(out[key], 3) if out.get(key) is not None else None)
    run.livekit_dispatch_id = out.get("livekit_dispatch_id", "")
    run.job_id = out.get("job_id", "")
    run.finished_at = timezone.now()
    run.save()
    metrics.canary_run_record(
        agent=agent.agent_name,
        success=success,
        times={"dispatch": run.dispatch_s, "job": run.job_s, "join": run.join_s},
    )
    logger.log(
        logging.INFO if success else logging.WARNING,
        "canary %s: %s",
        run.status,
        run.error or f"agent joined after {run.join_s} s",
        extra={"agent": agent.agent_name, "room": room},
    )
    if schedule is not None:
        canaries_check(agent_names=[agent.agent_name])
    return run


def canaries_check(*, agent_names: list[str] | None = None, now: datetime | None = None) -> None:
    """Raise or resolve `canary_failing:<agent>` and `canary_slow:<agent>` for each enabled
    canary (occurrences: failed runs in a row, slow runs in the window); resolve those of a
    canary that is disabled or deleted, or whose agent is disabled (its cause went away)."""
    _canaries_gone_resolve(now=now)
    schedules = CanarySchedule.objects.select_related("agent").filter(enabled=True, agent__enabled=True)
    if agent_names is not None:
        schedules = schedules.filter(agent__agent_name__in=agent_names)
    for schedule in schedules:
        name = schedule.agent.agent_name
        runs = list(
            CanaryRun.objects.filter(agent_name=name)
            .exclude(status=CanaryRun.Status.RUNNING)
            .order_by("-started_at", "-id")[: max(P95_WINDOW, schedule.alert_after_failures)]
        )
        if not runs:
            continue
        streak = 0
        for r in runs:
            if r.status != CanaryRun.Status.FAILED:
                break
            streak += 1
        failing = streak >= schedule.alert_after_failures
        if failing or runs[0].status == CanaryRun.Status.SUCCESS:
            incident_set(
                failing=failing,
                key=f"canary_failing:{name}",
                kind="canary_failing",
                subject=name,
                summary=f"Canary for '{name}' failed {streak} times in a row: {runs[0].error}",
                resolution=f"the canary for '{name}' succeeded",
                detail={"room": runs[0].room_name, "run_id": runs[0].pk},
                occurrences=streak,
                now=now,
            )
        if schedule.alert_p95_s is not None:
            joins = [r.join_s for r in runs if r.status == CanaryRun.Status.SUCCESS and r.join_s is not None]
            p95 = percentile(joins[:P95_WINDOW], 0.95)
            if p95 is not None:
                incident_set(
                    failing=p95 > schedule.alert_p95_s,
                    key=f"canary_slow:{name}",
                    kind="canary_slow",
                    subject=name,
                    summary=f"Canary for '{name}' is slow: p95 dispatch-to-join {p95:.2f} s "
                    f"(threshold {schedule.alert_p95_s:g} s, last {len(joins[:P95_WINDOW])} runs)",
                    resolution=f"canary p95 for '{name}' back under {schedule.alert_p95_s:g} s",
                    occurrences=sum(1 for j in joins[:P95_WINDOW] if j > schedule.alert_p95_s),
                    now=now,
                )


def _canaries_gone_resolve(*, now: datetime | None) -> None:
    from .models import Incident

    watched = set(
        CanarySchedule.objects.filter(enabled=True, agent__enabled=True).values_list(
            "agent__agent_name", flat=True
        )
    )
    for key, subject in Incident.objects.filter(
        kind__in=("canary_failing", "canary_slow"), status=Incident.Status.OPEN
    ).values_list("key", "subject"):
        if subject not in watched:
            incident_resolve(
                key=key,
                summary=f"the canary for '{subject}' was disabled or deleted, or the agent was disabled",
                now=now,
            )
