"""The portal's own verdicts, read before what LiveKit lists.

LiveKit keeps listing a dead worker's agent participant until its connection times out (about
20 s) and that worker's job as running for good. So:

- a *ghost* is an agent participant LiveKit still lists whose agent the portal knows is dead:
  the ledger failed its dispatch because its worker stopped answering, or the worker poll shows
  that worker silent now (`watch_app.selectors.agent_worker_silence`). A ghost is not "present";
- the ledger's verdict on an agent's attempts (no worker, failed, timed out), and the open
  incidents about it, outrank a job LiveKit lists as running: while the next attempt runs the
  doctor says "retrying: attempt k of N", and once the portal gave up it says so.
"""

from __future__ import annotations

from django.db.models import Q

from livekit_boundary.client import LkParticipant
from rooms_app.models import Dispatch
from rooms_app.services import WORKER_STOPPED
from watch_app.models import Incident
from watch_app.selectors import agent_worker_silence

from .facts import BROKEN, OK, UNKNOWN, Facts, Link, agent_name_quoted
from .wording import moment_described

BAD = (Dispatch.Status.NO_WORKER, Dispatch.Status.FAILED, Dispatch.Status.TIMED_OUT)
# The links a verdict about LiveKit's side of an attempt can land on, in chain order.
LIVEKIT_LINKS = ("dispatch", "job", "job_outcome", "agent")


def ghosts_find(facts: Facts) -> dict[str, str]:
    """Identity -> why it is dead, for agent participants LiveKit lists in the room."""
    listed = {p.identity for p in facts.lk.agents}
    ghosts: dict[str, str] = {}
    for d in facts.ledger:
        if not d.participant_identity or d.participant_identity not in listed:
            continue
        if d.status == Dispatch.Status.FAILED and d.last_error.startswith(WORKER_STOPPED):
            ghosts.setdefault(d.participant_identity, _worker_stopped(facts, d))
        elif d.status == Dispatch.Status.AGENT_JOINED:
            silence = agent_worker_silence(agent_name=d.agent_name, joined_at=d.joined_at, now=facts.now)
            if silence is not None and silence.holds:
                ghosts.setdefault(
                    d.participant_identity, silence.described(facts.now, with_error=facts.scope.everything)
                )
    return ghosts


def agents_alive(facts: Facts, agent_name: str, ghosts: dict[str, str]) -> list[LkParticipant]:
    """The agent's participants in the room, ghosts left out."""
    return [p for p in facts.agents_named(agent_name) if p.identity not in ghosts]


def _worker_stopped(facts: Facts, d: Dispatch) -> str:
    silence = agent_worker_silence(agent_name=d.agent_name, joined_at=d.joined_at, now=facts.now)
    if silence is not None:
        return silence.described(facts.now, with_error=facts.scope.everything)
    return f"{WORKER_STOPPED} (recorded {moment_described(d.left_at or d.ended_at, facts.now)})"


def _verdict(facts: Facts, d: Dispatch) -> str:
    agent = agent_name_quoted(d.agent_name)
    if d.status == Dispatch.Status.NO_WORKER:
        return f"attempt {d.attempt} of {agent} found no worker ({d.last_error})"
    if d.status == Dispatch.Status.TIMED_OUT:
        return f"attempt {d.attempt} of {agent} timed out: {d.last_error}"
    if d.last_error.startswith(WORKER_STOPPED):
        return f"attempt {d.attempt} of {agent} failed: {_worker_stopped(facts, d)}"
    return f"attempt {d.attempt} of {agent} failed: {d.last_error or 'no detail recorded'}"


def _link_of(d: Dispatch) -> str:
    """Where in the chain the attempt broke."""
    if d.status == Dispatch.Status.NO_WORKER:
        return "job"
    if d.status == Dispatch.Status.TIMED_OUT or d.joined_at is not None:
        return "agent"  # its job ran without its agent joining, or its agent left or died
    if d.livekit_job_id:
        return "job_outcome"
    return "dispatch"


def _incidents(facts: Facts, agent_name: str) -> list[Incident]:
    return list(
        Incident.objects.filter(status=Incident.Status.OPEN)
        .filter(Q(kind="dispatch_gave_up", subject=agent_name) | Q(detail__room=facts.room_name))
        .order_by("opened_at")[:5]
    )


def ledger_verdicts_first(
    by_key: dict[str, Link], facts: Facts, expected: list[str], ghosts: dict[str, str], fixes: dict[str, str]
) -> None:
    """For each expected agent not alive in the room whose latest attempt ended badly (the
    portal gave up) or replaces one that did (retrying): the link where that attempt broke
    is broken with the ledger's verdict, whatever LiveKit lists there (a job "running")."""
    for name in expected:
        if agents_alive(facts, name, ghosts):
            continue
        history = facts.ledger_for(name)
        if not history:
            continue
        last = history[0]
        agent = facts.agents.get(name)
        of = f" of {agent.max_attempts}" if agent is not None else ""
        incidents = _incidents(facts, name)
        if last.is_live:
            failed = next((d for d in history if d.pk == last.previous_id and d.status in BAD), None)
            if failed is None:
                continue
            tail = f"retrying: attempt {last.attempt}{of} ({last.status.replace('_', ' ')})"
        elif last.status in BAD:
            failed = last
            fallback = next((d for d in facts.ledger if d.previous_id == last.pk), None)
            tail = (
                f"the portal fell back to {agent_name_quoted(fallback.agent_name)} "
                f"({fallback.status.replace('_', ' ')})"
                if fallback is not None
                else f"the portal gave up after {last.attempt} attempt(s)"
            )
        else:
            continue
        tail += "".join(
            f"; incident '{i.key}' opened {moment_described(i.opened_at, facts.now)}" for i in incidents
        )
        summary = f"{_verdict(facts, failed)}; {tail}"
        _broken_at(
            by_key,
            _link_of(failed),
            summary,
            cause=f"The portal's own verdict, which outranks what LiveKit still lists: {summary}.",
            fix=fixes.get(_link_of(failed), fixes["agent"]).format(agent=name, url=facts.livekit_url),
            gave_up=not last.is_live,
        )


def _broken_at(
    by_key: dict[str, Link], key: str, summary: str, *, cause: str, fix: str, gave_up: bool
) -> None:
    target = by_key[key]
    upstream = [by_key[k] for k in ("livekit", "rules", "token") if by_key[k].state == BROKEN]
    earlier = [by_key[k] for k in LIVEKIT_LINKS[: LIVEKIT_LINKS.index(key)] if by_key[k].state == BROKEN]
    if upstream or (earlier and not gave_up):
        # Something before it is broken now (for the attempt running): that comes first.
        (upstream or earlier)[0].details.append(f"the portal's verdict: {summary}")
        return
    for link in earlier:
        # After giving up the portal removed what LiveKit had: a consequence, not the cause.
        link.details.extend(x for x in (link.cause,) if x)
        link.set(UNKNOWN, f"{link.summary} (after the portal's verdict at link {target.number})")
    if target.state == BROKEN:  # LiveKit's side already found it: keep its cause, lead with the verdict
        target.details.append(target.summary)
        target.set(BROKEN, summary, cause=f"{cause} {target.cause}", fix=target.fix)
        return
    if target.summary and target.state in (OK, UNKNOWN):
        target.details.append(f"LiveKit lists: {target.summary}")
    target.set(BROKEN, summary, cause=cause, fix=fix)
