"""The walk: each link of the dispatch chain judged ok, broken or unknown, with cause and fix."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from agents_app.rules import Join
from agents_app.selectors import EVERYTHING, Scope
from agents_app.services import rules_explain
from livekit_boundary.client import (
    LiveKitAuthRejected,
    LkParticipant,
)
from rooms_app.models import Dispatch, Room
from watch_app.selectors import PresenceState, agent_presence

from .facts import (
    BROKEN,
    LINK_TITLES,
    MAX_JOINS,
    OK,
    UNKNOWN,
    Diagnosis,
    Facts,
    Link,
    agent_name_quoted,
    agent_names_quoted,
    agent_names_seen,
    facts_gather,
)
from .verdicts import agents_alive as _alive
from .verdicts import ghosts_find as _ghosts
from .verdicts import ledger_verdicts_first
from .wording import moment_described

# Presence states that come from polling the workers' own health URLs (not from the ledger).
HEALTH_POLLED = (PresenceState.ONLINE, PresenceState.FULL, PresenceState.STALE, PresenceState.OFFLINE)

# --- the walk -------------------------------------------------------------------------------


def room_diagnose(
    *,
    room_name: str,
    agent_name: str | None = None,
    identity: str | None = None,
    now: datetime | None = None,
    scope: Scope = EVERYTHING,
) -> Diagnosis:
    """Walk the chain for `room_name` (optionally one agent, one participant identity), with
    the facts the caller's `scope` may see (every name and URL in the answer comes from them)."""
    now = now or timezone.now()
    facts = facts_gather(room_name, now, scope)
    links = [Link(n, key, title) for n, (key, title) in enumerate(LINK_TITLES, start=1)]
    by_key = {link.key: link for link in links}

    _check_livekit(by_key["livekit"], facts)
    ghosts = _ghosts(facts)
    managed = _check_rules(by_key["rules"], facts, agent_name=agent_name, identity=identity, ghosts=ghosts)
    if agent_name is not None:
        wanted = {agent_name: managed[agent_name]} if agent_name in managed else {}
    else:
        wanted = managed
    expected = list(wanted)
    token_broken = _check_token(by_key["token"], facts, wanted)
    if not facts.reachable:
        for key in ("dispatch", "job", "job_outcome", "agent", "crowd"):
            by_key[key].set(UNKNOWN, "not checked: LiveKit could not be asked (link 1)")
    elif not expected:
        for key in ("dispatch", "job", "job_outcome", "agent"):
            by_key[key].set(UNKNOWN, "not checked: no agent is expected in this room (link 2)")
        _check_crowd(by_key["crowd"], facts, expected, managed=set(managed), ghosts=ghosts)
    elif not facts.live:
        _check_not_live(by_key, facts, expected)
    else:
        _check_dispatch(by_key["dispatch"], facts, wanted, token_broken)
        _check_job(by_key["job"], facts, expected)
        _check_job_outcome(by_key["job_outcome"], facts, expected)
        _check_agent(by_key["agent"], facts, expected, ghosts)
        _check_crowd(by_key["crowd"], facts, expected, managed=set(managed), ghosts=ghosts)
        ledger_verdicts_first(by_key, facts, expected, ghosts, _FIXES)
    _present_outranks_inferred(links, facts, expected, ghosts)
    return Diagnosis(
        room_name=room_name,
        agent=agent_name,
        identity=identity,
        checked_at=now,
        livekit_url=facts.livekit_url,
        room_live=facts.live,
        expected_agents=expected,
        links=links,
    )


def _present_outranks_inferred(
    links: list[Link], facts: Facts, expected: list[str], ghosts: dict[str, str]
) -> None:
    """What LiveKit shows outranks what was inferred: with every expected agent present in
    the room, nothing upstream of it (rules, token, dispatch, job) is "broken" or "not known"
    (the real server lists a worker's job in ListDispatch seconds after its agent joined, and
    an agent dispatched through the API has no token); what was found there is kept as
    information."""
    if not (facts.live and expected and all(_alive(facts, name, ghosts) for name in expected)):
        return
    for link in links:
        if link.key in ("rules", "token", "dispatch", "job", "job_outcome") and link.state in (
            BROKEN,
            UNKNOWN,
        ):
            if link.cause:
                link.details.append(link.cause)
            link.set(OK, f"informational (the agent is present and running): {link.summary}")


@dataclass(frozen=True, slots=True)
class Wanted:
    """Why the portal expects an agent in this room, and how it is delivered."""

    agent_name: str
    reason: str
    delivery: str  # token | explicit


def _check_livekit(link: Link, facts: Facts) -> None:
    url = facts.livekit_url
    error = facts.lk.error
    if isinstance(error, LiveKitAuthRejected):
        link.set(
            BROKEN,
            f"LiveKit at {url} refused the portal's API key",
            cause=f"LiveKit at {url} refused {facts.livekit_key_named} or its secret "
            f"({error.method} answered {error.status}).",
            fix="Set LIVEKIT_API_KEY and LIVEKIT_API_SECRET to a key pair of this server (the `keys:` "
            "of livekit.yaml, or the project's API keys in LiveKit Cloud), then restart the portal.",
        )
    elif error is not None and facts.lk.room_node_silent:
        link.set(
            BROKEN,
            f"LiveKit at {url} answered, but the LiveKit node hosting room '{facts.room_name}' does not",
            cause=f"LiveKit lists the room (from the cluster's Redis), but a call that goes to the node "
            f"hosting it failed ({error.message}). That node is down or cut off: the people and agents "
            "in this room lost their connection to it.",
            fix="Restart or replace the LiveKit node. About 5 s after the node's last heartbeat, a join "
            "(a person's SDK reconnecting) or a CreateDispatch moves the room to a live node, which "
            "keeps its sid; the portal's reconcile then re-dispatches agents that did not come back. "
            "Set `api.enable_psrpc_for_get_list_participants: true` on every node, or LiveKit keeps "
            "listing a dead node's participants in the moved room.",
        )
    elif error is not None:
        link.set(
            BROKEN,
            f"cannot reach LiveKit at {url}",
            cause=f"{error.message}.",
            fix=f"Check that LiveKit runs and that LIVEKIT_URL ({url}) is its API address as seen from "
            "this machine (http(s)://host:7880 for self-hosted, https://<project>.livekit.cloud for Cloud).",
        )
    elif facts.lk.room is None:
        link.set(OK, f"LiveKit at {url} answered; room '{facts.room_name}' is not live there")
    else:
        room = facts.lk.room
        humans = [p for p in facts.lk.participants if not p.is_agent]
        link.set(
            OK,
            f"LiveKit at {url} answered; room is live, created {moment_described(room.created_at, facts.now)}, "
            f"with {len(humans)} participant(s) and {len(facts.lk.agents)} agent(s)",
        )


def _joins(facts: Facts, identity: str | None) -> list[Join]:
    """Who to evaluate the rules for: the given identity, else the people in the room and
    those the portal minted tokens for (each with the attributes LiveKit reports)."""
    present = {p.identity: p for p in facts.lk.participants if not p.is_agent}
    if identity is not None:
        found = present.get(identity)
        return [Join(facts.room_name, identity, attributes=dict(found.attributes) if found else {})]
    joins = [Join(facts.room_name, p.identity, attributes=dict(p.attributes)) for p in present.values()]
    for d in facts.ledger:
        who = d.participant_identity_trigger
        if who and who not in present and len(joins) < MAX_JOINS:
            joins.append(Join(facts.room_name, who))
            present[who] = None  # type: ignore[assignment]
    return joins[:MAX_JOINS] or [Join(facts.room_name, "")]


def _check_rules(
    link: Link, facts: Facts, *, agent_name: str | None, identity: str | None, ghosts: dict[str, str]
) -> dict[str, Wanted]:
    joins = _joins(facts, identity)
    applied: dict[str, Wanted] = {}
    disabled: dict[str, str] = {}  # agent -> a matching rule
    reasons: dict[str, list[str]] = {}  # agent -> why each of its rules did not apply
    for join in joins:
        who = f" for '{join.participant_identity}'" if join.participant_identity else ""
        result = rules_explain(join=join, scope=facts.scope)
        for a in result["agents"]:
            applied.setdefault(
                a["agent_name"], Wanted(a["agent_name"], f"rule '{a['rule']}'{who}", a["delivery"])
            )
        for v in result["rules"]:
            if v["outcome"] == "agent_disabled":
                disabled.setdefault(v["agent_name"], v["rule"])
            elif v["outcome"] != "applied":
                reasons.setdefault(v["agent_name"], []).append(f"rule '{v['rule']}': {v['reason']}")
    # A token's agent the rules no longer give (the rule was fixed) stops being expected once
    # an agent the rules do give is in the room and that token's dispatch has ended.
    right_present = any(_alive(facts, name, ghosts) for name in applied)
    withdrawn: dict[str, Dispatch] = {}
    for d in facts.ledger:
        if d.agent_name in withdrawn:
            continue
        if d.agent_name not in applied and d.source == "token" and right_present and not d.is_live:
            withdrawn[d.agent_name] = d
            continue
        # Agents asked for through the API (or as a fallback) are expected as well.
        if d.agent_name not in applied and d.source in ("api", "fallback", "reconcile"):
            applied[d.agent_name] = Wanted(
                d.agent_name, f"{d.get_source_display().lower()} dispatch #{d.pk}", d.delivery
            )
        elif d.agent_name not in applied and d.source == "token":
            applied[d.agent_name] = Wanted(
                d.agent_name, f"token for '{d.participant_identity_trigger}' (rule '{d.rule_name}')", "token"
            )

    for name, d in withdrawn.items():
        if name not in applied:
            link.details.append(
                f"{agent_name_quoted(name)} is no longer expected: the token for "
                f"'{d.participant_identity_trigger}' carried it (rule '{d.rule_name}'), but no rule gives it "
                f"now, and {agent_names_quoted(n for n in applied if _alive(facts, n, ghosts))} is in the room "
                f"(its dispatch #{d.pk} ended {d.get_status_display().lower()})"
            )
    evaluated = ", ".join(f"'{j.participant_identity}'" for j in joins if j.participant_identity)
    on = f"room '{facts.room_name}'" + (f" and identity {evaluated}" if evaluated else "")
    explain = "Test it on the rule list's 'Explain / test rules' page with this room name."

    if agent_name is not None:
        agent = facts.agents.get(agent_name)
        if agent_name in applied:
            wanted = applied[agent_name]
            link.set(
                OK,
                f"{agent_name_quoted(agent_name)} is wanted by {wanted.reason} ({wanted.delivery} delivery)",
            )
            return applied
        if agent is None:
            close = difflib.get_close_matches(agent_name, [n for n in facts.agents if n], n=3, cutoff=0.75)
            missing = f"agent named exactly '{agent_name}'" if agent_name else "unnamed agent"
            link.set(
                BROKEN,
                f"no {missing} is configured",
                cause=f"The portal has no {missing} configured"
                + (f"; configured agents with close names: {agent_names_quoted(close)}" if close else "")
                + ".",
                fix="Add the agent in Admin › Agents with exactly the name its worker registers "
                "(WorkerOptions(agent_name=...)), then a rule giving it this room.",
            )
        elif not agent.enabled:
            link.set(
                BROKEN,
                f"agent {agent_name_quoted(agent_name)} is disabled",
                cause=f"Agent {agent_name_quoted(agent_name)} is disabled in the portal, so no rule dispatches it"
                + (f" (rule '{disabled[agent_name]}' matches {on})" if agent_name in disabled else "")
                + ".",
                fix=f"Enable {agent_name_quoted(agent_name)} in Admin › Agents.",
            )
        else:
            why = reasons.get(agent_name) or [f"no rule names {agent_name_quoted(agent_name)}"]
            link.set(
                BROKEN,
                f"no enabled rule gives {agent_name_quoted(agent_name)} to this room",
                cause=f"No enabled rule gives {agent_name_quoted(agent_name)} to {on}: "
                + "; ".join(why[:3])
                + ".",
                fix=f"Add or change a rule for {agent_name_quoted(agent_name)} whose room match covers "
                f"'{facts.room_name}'. {explain}",
            )
            link.details.extend(why)
        return applied

    if applied:
        link.set(
            OK,
            "expected: "
            + "; ".join(
                f"{agent_name_quoted(w.agent_name)} by {w.reason} ({w.delivery})" for w in applied.values()
            ),
        )
        for name, rule in disabled.items():
            if name not in applied:
                link.details.append(
                    f"rule '{rule}' also matches, but its agent {agent_name_quoted(name)} is disabled"
                )
        return applied
    if disabled:
        name, rule = next(iter(disabled.items()))
        link.set(
            BROKEN,
            f"the matching rule's agent {agent_name_quoted(name)} is disabled",
            cause=f"Rule '{rule}' matches {on}, but its agent {agent_name_quoted(name)} is disabled, so no agent "
            "is dispatched.",
            fix=f"Enable {agent_name_quoted(name)} in Admin › Agents, or point the rule at an enabled agent.",
        )
        return {}
    link.set(
        BROKEN,
        "no rule gives this room an agent",
        cause=f"No enabled rule matches {on}, and nothing asked for an agent through the API.",
        fix=f"Add a dispatch rule whose room match covers '{facts.room_name}'. {explain}",
    )
    return {}


def _check_token(link: Link, facts: Facts, wanted: dict[str, Wanted]) -> set[str]:
    """Returns the agents whose token delivery is broken. Reads the token facts (every token
    the portal minted with agents), not the dispatch rows their application produced."""
    by_token = [w for w in wanted.values() if w.delivery == "token"]
    if not by_token:
        link.set(OK, "not used: no expected agent travels in a token" if wanted else "not used")
        return set()
    room = facts.ledger_room
    names = agent_names_quoted(w.agent_name for w in by_token)
    people = [p for p in facts.lk.participants if not p.is_agent]
    if not facts.token_facts:
        if facts.live and people:
            link.set(
                BROKEN,
                "no token carrying the agent came from the portal",
                cause=f"{len(people)} participant(s) are in room '{facts.room_name}', but the portal "
                f"minted no token carrying {names} for it: they joined with tokens minted elsewhere.",
                fix="Have the frontend fetch its token from POST /api/v1/token, or set the rule's "
                "delivery to 'explicit' so the portal dispatches the agent whoever minted the token.",
            )
            return {w.agent_name for w in by_token}
        link.set(UNKNOWN, "no token minted for this room yet")
        return set()

    broken: set[str] = set()
    notes: list[str] = []
    lk_room = facts.lk.room
    first_minted = facts.token_facts[-1].minted_at
    existed_before = bool(room is not None and room.existed_before_token) or bool(
        lk_room is not None and lk_room.created_at is not None and lk_room.created_at < first_minted
    )
    for w in by_token:
        carrying = facts.tokens_carrying(w.agent_name)
        agent = agent_name_quoted(w.agent_name)
        if not carrying:
            broken.add(w.agent_name)
            link.set(
                BROKEN,
                f"the tokens minted did not carry {agent}",
                cause=f"The portal minted {len(facts.token_facts)} token(s) with agents for '{facts.room_name}' "
                f"(first {moment_described(first_minted, facts.now)}), but none carried {agent}: the rule "
                "was probably added or changed after they were minted.",
                fix="Have the participant fetch a new token (rejoin), or dispatch the agent from "
                "Admin › Dispatches.",
            )
            return broken
        fact, item = carrying[0]
        minted = (
            f"the token for '{fact.participant_identity}' ({moment_described(fact.minted_at, facts.now)})"
        )
        rows = facts.ledger_for(w.agent_name)
        if item.get("delivery") == "explicit":
            notes.append(
                f"{agent}: the room already existed when {minted} was minted, so the portal dispatched it explicitly"
            )
            continue
        if any(d.source == "token" and d.delivery == "explicit" for d in rows):
            notes.append(
                f"{agent}: carried in {minted}; LiveKit ignored it (the room existed before that join), "
                "so the portal dispatched it explicitly"
            )
            continue
        if facts.live and not facts.lk_dispatches_for(w.agent_name) and existed_before:
            broken.add(w.agent_name)
            created = moment_described(lk_room.created_at if lk_room else None, facts.now)
            link.set(
                BROKEN,
                f"the token carried {agent}, but the room existed before the first join",
                cause=f"The token for '{fact.participant_identity}' carried {agent} (minted "
                f"{moment_described(fact.minted_at, facts.now)}), but room '{facts.room_name}' already "
                f"existed (created {created}, before the portal's first token "
                f"{moment_described(first_minted, facts.now)}), so LiveKit ignored the token's agents: it "
                "applies them only when that join creates the room (livekit/livekit#4390).",
                fix="Dispatch the agent now (Admin › Dispatches, or POST /api/v1/dispatches), and give "
                "rooms that other apps create an 'explicit' delivery rule; the portal switches to "
                "explicit dispatch by itself when it knows the room exists.",
            )
            return broken
        notes.append(f"{agent}: carried in {minted}")
    link.set(OK, "; ".join(notes))
    return broken


def _check_not_live(by_key: dict[str, Link], facts: Facts, expected: list[str]) -> None:
    """The room is not in LiveKit: only the ledger can say what became of its agents."""
    room = facts.ledger_room
    if room is not None and room.status == Room.Status.FINISHED:
        ended = f" {moment_described(room.finished_at, facts.now)}" if room.finished_at else ""
        where = f"room '{facts.room_name}' finished{ended}"
    elif room is not None and room.status == Room.Status.ACTIVE:
        where = f"room '{facts.room_name}' is gone from LiveKit (reconcile will close it in the ledger)"
    else:
        where = f"room '{facts.room_name}' is not live in LiveKit: nobody has joined yet"
    for key in ("dispatch", "job", "job_outcome", "agent", "crowd"):
        by_key[key].set(UNKNOWN, f"not checked: {where}")
    for name in expected:
        history = facts.ledger_for(name)
        if not history:
            continue
        last = history[0]
        broken_key = {"no_worker": "job", "failed": "job_outcome", "timed_out": "agent"}.get(last.status)
        if broken_key is None:
            by_key["agent"].details.append(
                f"{agent_name_quoted(name)}: last dispatch #{last.pk} was {last.get_status_display()}"
            )
            continue
        label = last.get_status_display().lower()
        by_key[broken_key].set(
            BROKEN,
            f"{agent_name_quoted(name)}: {label}, says the ledger ({where})",
            cause=f"The last dispatch of {agent_name_quoted(name)} (#{last.pk}, attempt {last.attempt}) ended "
            f"{moment_described(last.ended_at, facts.now)} as '{label}': {last.last_error or 'no detail recorded'}.",
            fix=_FIXES[broken_key].format(agent=name, url=facts.livekit_url),
        )


def _check_dispatch(link: Link, facts: Facts, wanted: dict[str, Wanted], token_broken: set[str]) -> None:
    found: list[str] = []
    waiting: list[str] = []
    for name, w in wanted.items():
        dispatches = facts.lk_dispatches_for(name)
        if dispatches:
            found.append(
                f"{agent_name_quoted(name)}: {', '.join(d.id for d in dispatches)}, "
                f"created {moment_described(dispatches[0].created_at, facts.now)}"
            )
            continue
        only_implicit = any(d.agent_name == "" for d in facts.lk.dispatches) and name != ""
        implicit = " Only LiveKit's implicit dispatch for unnamed workers is there." if only_implicit else ""
        if name in token_broken:
            link.set(
                BROKEN,
                f"no dispatch for {agent_name_quoted(name)} in LiveKit",
                cause=f"LiveKit has no dispatch for {agent_name_quoted(name)}: the token's agents were ignored (link 3).",
                fix="See link 3.",
            )
            return
        history = facts.ledger_for(name)
        if _no_worker_attempts(history):
            # The portal deleted the dispatch no worker took; link 5 names why.
            waiting.append(f"{agent_name_quoted(name)}: {_attempts_described(history, facts)}")
            continue
        state, summary, cause, fix = _missing_dispatch_why(facts, name, w, history[0] if history else None)
        if state == UNKNOWN:
            waiting.append(summary)
            continue
        link.set(state, summary, cause=cause + implicit, fix=fix)
        return
    if waiting:
        link.set(UNKNOWN, "; ".join(waiting + found))
    else:
        link.set(OK, "; ".join(found))


def _no_worker_attempts(history: list[Dispatch]) -> list[Dispatch]:
    return [d for d in history if d.status == "no_worker"]


def _attempts_described(history: list[Dispatch], facts: Facts) -> str:
    last = history[0]
    failed = _no_worker_attempts(history)
    text = f"{len(failed)} attempt(s) ended with no worker taking the job (link 5); "
    if last.is_live:
        return text + f"attempt {last.attempt} (#{last.pk}) is {last.get_status_display().lower()}"
    return text + "the portal gave up"


def _missing_dispatch_why(
    facts: Facts, name: str, w: Wanted, last: Dispatch | None
) -> tuple[str, str, str, str]:
    """(state, summary, cause, fix) for an expected agent with no dispatch in LiveKit."""
    agent = agent_name_quoted(name)
    summary = f"no dispatch for {agent} in LiveKit"
    worker_fix = "Start the Celery worker (`make run` starts one; else `celery -A dispatchportal worker`)."
    if last is None:
        if w.delivery == "token":
            return (
                BROKEN,
                summary,
                f"LiveKit has no dispatch for {agent}, although it travels in the token: the room was "
                "not created by a join with the portal's token.",
                "Dispatch it from Admin › Dispatches; use 'explicit' delivery for rooms others create.",
            )
        return (
            BROKEN,
            summary,
            f"Nothing asked LiveKit for {agent} in this room: the ledger has no dispatch for it. The "
            "room_started webhook probably never reached the portal.",
            "Point LiveKit's webhook at https://<portal>/livekit/webhook signed with the same API key, "
            "and run `manage.py reconcile` to apply the explicit rules now.",
        )
    when = moment_described(last.updated_at, facts.now)
    status = last.get_status_display().lower()
    if last.status in ("pending", "requested") and not last.livekit_dispatch_id:
        since = moment_described(last.created_at, facts.now)
        error = f"; last error: {last.last_error}" if last.last_error else ""
        if not facts.worker_alive:
            beat = (
                f"its last heartbeat was {moment_described(facts.heartbeat.beat_at, facts.now)}"
                if facts.heartbeat is not None
                else "none ever sent a heartbeat"
            )
            return (
                BROKEN,
                f"dispatch #{last.pk} of {agent} waits for a Celery worker, and none is running",
                f"Dispatch #{last.pk} of {agent} is still {status} since {since}: the Celery worker "
                f"that sends it to LiveKit is not running ({beat}){error}.",
                worker_fix,
            )
        if last.delivery == "token":
            what = "waiting for the participant to join with the token that carries it"
        else:
            what = "the Celery worker (running) is sending it to LiveKit"
        return (UNKNOWN, f"{agent}: dispatch #{last.pk} {status} since {since}; {what}{error}", "", "")
    if last.status == "failed":
        return (
            BROKEN,
            summary,
            f"The portal's dispatch of {agent} (#{last.pk}, attempt {last.attempt}) failed {when}: {last.last_error}.",
            "Fix what LiveKit refused, then re-dispatch from Admin › Dispatches.",
        )
    if last.status == "cancelled":
        return (
            BROKEN,
            summary,
            f"Dispatch #{last.pk} of {agent} was cancelled {when}.",
            "Re-dispatch it if it is still wanted.",
        )
    if not last.is_live:
        return (
            BROKEN,
            summary,
            f"The last dispatch of {agent} (#{last.pk}, attempt {last.attempt}) ended {when} as '{status}'"
            + (f": {last.last_error}" if last.last_error else "")
            + ", and nothing replaced it.",
            "Re-dispatch from Admin › Dispatches, or run `manage.py reconcile`.",
        )
    if last.livekit_dispatch_id and last.requested_at is not None and last.requested_at >= facts.now:
        # LiveKit is asked before the ledger is read: a dispatch sent in between is not in its
        # answer yet, which says nothing about it.
        return (
            UNKNOWN,
            f"{agent}: dispatch #{last.pk} was sent to LiveKit ({last.livekit_dispatch_id}) while the doctor "
            "was asking; ask again",
            "",
            "",
        )
    if last.livekit_dispatch_id:
        return (
            BROKEN,
            summary,
            f"The ledger's dispatch #{last.pk} of {agent} ({last.livekit_dispatch_id}, {status}) is no longer "
            "in LiveKit: it was deleted by someone else or the room was recreated.",
            "Re-dispatch from Admin › Dispatches, or run `manage.py reconcile`.",
        )
    return (
        BROKEN,
        summary,
        f"No LiveKit dispatch for {agent} (ledger dispatch #{last.pk}: {status}).",
        worker_fix,
    )


_FIXES = {
    "job": "Start a worker with WorkerOptions(agent_name='{agent}') against LIVEKIT_URL={url} with this "
    "project's API key (fix the name on whichever side has the typo), then re-dispatch: LiveKit never "
    "hands an earlier dispatch to a worker that registers later.",
    "job_outcome": "Read the worker's log for this job; self-hosted LiveKit never re-dispatches, so "
    "re-dispatch from Admin › Dispatches (the portal's reconcile does it too while the room is active).",
    "agent": "Re-dispatch from Admin › Dispatches (reconcile does it while the room is active), and "
    "check the worker's log for why the agent left.",
}


def _check_job(link: Link, facts: Facts, expected: list[str]) -> None:
    found: list[str] = []
    waiting: list[str] = []
    for name in expected:
        dispatches = facts.lk_dispatches_for(name)
        history = facts.ledger_for(name)
        if not dispatches:
            gave_up = _no_worker_attempts(history)
            if gave_up:
                ended = gave_up[0]
                link.set(
                    BROKEN,
                    f"no worker registered as '{name}' took {agent_name_quoted(name)}'s dispatch",
                    **_no_worker(
                        facts,
                        name,
                        f"dispatch #{ended.pk} (attempt {ended.attempt})",
                        ended.requested_at or ended.created_at,
                        history,
                    ),
                )
                return
            link.set(UNKNOWN, f"no dispatch for {agent_name_quoted(name)} to take (link 4)")
            return
        latest = dispatches[-1]
        if any(d.jobs for d in dispatches):
            jobs = [j for d in dispatches for j in d.jobs]
            found.append(f"{agent_name_quoted(name)}: job {jobs[-1].id} ({jobs[-1].status})")
            continue
        age = (facts.now - latest.created_at).total_seconds() if latest.created_at else None
        deadline = facts.deadline_s(name)
        if age is not None and age < deadline and not _no_worker_attempts(history):
            waiting.append(
                f"{agent_name_quoted(name)}: waiting, {deadline - age:.0f} s left of its {deadline} s join "
                f"deadline; no job yet (dispatched {age:.0f} s ago)"
            )
            continue
        link.set(
            BROKEN,
            f"no worker took dispatch {latest.id} of {agent_name_quoted(name)}",
            **_no_worker(facts, name, f"dispatch {latest.id}", latest.created_at, history),
        )
        return
    if waiting:
        link.set(UNKNOWN, "; ".join(waiting + found))
    else:
        link.set(OK, "; ".join(found))


def _no_worker(
    facts: Facts, name: str, what: str, created: datetime | None, history: list[Dispatch]
) -> dict[str, str]:
    url = facts.livekit_url
    seen = agent_names_seen(facts)
    close = [
        n for n in difflib.get_close_matches(name, [n for n in seen if n], n=3, cutoff=0.75) if n != name
    ]
    configured_close = [
        n
        for n in difflib.get_close_matches(name, [n for n in facts.agents if n], n=3, cutoff=0.75)
        if n != name and n not in close
    ]
    parts = [
        f"LiveKit took {what} for {agent_name_quoted(name)} {moment_described(created, facts.now)}, but no job "
        "came: no worker "
    ]
    if name == "":
        named = sorted(n for n in seen if n)
        parts.append(
            "registered without an agent name is connected. An empty agent name only reaches unnamed "
            "workers (those are sent to every new room automatically); a worker registered with a name "
            "never gets it"
            + (f". Named agents seen joining recently: {agent_names_quoted(named)}" if named else "")
            + "."
        )
        fix = (
            "Register the worker without agent_name, or give the rule the agent name the worker uses. "
            f"LIVEKIT_URL must be {url}."
        )
        return {"cause": "".join(parts), "fix": fix}
    parts.append(f"is registered as exactly '{name}' on LiveKit at {url}.")
    if close:
        parts.append(
            " Workers seen recently: "
            + ", ".join(f"'{n}' (room '{seen[n]}')" for n in close)
            + " (a typo? in the worker's or the portal's agent name)."
        )
    if configured_close:
        parts.append(f" Configured agents with close names: {agent_names_quoted(configured_close)}.")
    presence = agent_presence(agent_name=name, now=facts.now)
    # The admin registered the workers' health URLs; their errors name internal addresses.
    if presence.state in HEALTH_POLLED and facts.scope.everything:
        parts.append(f" Worker health: {presence.message}.")
    if "" in seen:
        parts.append(
            " An unnamed worker is connected (seen in room "
            f"'{seen['']}'): unnamed workers get automatic dispatch to every new room but never a named "
            f"dispatch, so it cannot answer for '{name}'."
        )
    parts.append(
        " Otherwise the worker is down, not yet up, or registered on another LiveKit server or project "
        "(its LIVEKIT_URL or API key differ from the portal's)."
    )
    if history:
        last = history[0]
        if last.is_live:
            parts.append(
                f" The portal is trying again: attempt {last.attempt} (#{last.pk}) is {last.status}."
            )
        elif last.status == "no_worker":
            parts.append(f" The portal gave up after {last.attempt} attempt(s).")
    return {"cause": "".join(parts), "fix": _FIXES["job"].format(agent=name, url=url)}


def _check_job_outcome(link: Link, facts: Facts, expected: list[str]) -> None:
    notes: list[str] = []
    for name in expected:
        jobs = [(d, j) for d in facts.lk_dispatches_for(name) for j in d.jobs]
        if not jobs:
            link.set(UNKNOWN, f"no job for {agent_name_quoted(name)} yet (link 5)")
            return
        dispatch, job = jobs[-1]
        if job.active:
            earlier = [j for _, j in jobs[:-1] if j.status == "failed"]
            extra = f" (replacing {len(earlier)} failed job(s))" if earlier else ""
            notes.append(f"{agent_name_quoted(name)}: job {job.id} is {job.status}{extra}")
            continue
        if job.status in ("failed", "cancelled"):
            ended = _ledger_time(facts, name, job.id, "ended_at")
            error = job.error or "no error given"
            link.set(
                BROKEN,
                f"job {job.id} of {agent_name_quoted(name)} {job.status}",
                cause=f"Job {job.id} of {agent_name_quoted(name)} (dispatch {dispatch.id}) {job.status} "
                f"{moment_described(ended, facts.now) if ended else '(LiveKit does not say when)'}: {error}."
                + _retry_described(facts.ledger_for(name)),
                fix=_FIXES["job_outcome"],
            )
            return
        notes.append(f"{agent_name_quoted(name)}: job {job.id} ended without error")
    link.set(OK, "; ".join(notes))


def _retry_described(history: list[Dispatch]) -> str:
    """What the portal is doing about it, from the ledger's latest attempt."""
    last = history[0] if history else None
    if last is not None and last.is_live and last.attempt > 1:
        return f" The portal is re-dispatching: attempt {last.attempt} (#{last.pk}) is {last.status}."
    if last is not None and not last.is_live and last.status != "cancelled":
        return f" The portal gave up after {last.attempt} attempt(s)."
    return ""


def _ledger_time(facts: Facts, name: str, job_id: str, attr: str) -> datetime | None:
    for d in facts.ledger_for(name):
        if d.livekit_job_id == job_id or (d.participant_identity and d.participant_identity.endswith(job_id)):
            return getattr(d, attr) or d.left_at or d.ended_at
    return None


def _check_agent(link: Link, facts: Facts, expected: list[str], ghosts: dict[str, str]) -> None:
    notes: list[str] = []
    for name in expected:
        present = _alive(facts, name, ghosts)
        if present:
            first = present[0]
            notes.append(
                f"{agent_name_quoted(name)}: {first.identity} joined {moment_described(first.joined_at, facts.now)}"
            )
            continue
        dead = [p for p in facts.agents_named(name) if p.identity in ghosts]
        if dead:
            ghost = dead[0]
            link.set(
                BROKEN,
                f"{agent_name_quoted(name)} ({ghost.identity}) is still listed by LiveKit, but {ghosts[ghost.identity]}",
                cause=f"Agent {agent_name_quoted(name)} ({ghost.identity}) is dead: {ghosts[ghost.identity]}. "
                "LiveKit keeps listing a dead worker's participant until its connection times out (about "
                "20 s) and its job as running for good, so they are not taken as signs of life."
                + _retry_described(facts.ledger_for(name)),
                fix="The portal re-dispatches once a second poll confirms the silence (and removes the dead "
                "participant); restart the worker, and give every worker of the agent a health URL "
                "(Admin › Worker health URLs) so the portal can tell which worker held which agent.",
            )
            return
        jobs = [j for d in facts.lk_dispatches_for(name) for j in d.jobs]
        if not jobs:
            if facts.within_deadline(name) or _ledger_waiting(facts, name):
                link.set(UNKNOWN, f"{agent_name_quoted(name)} is not in the room yet (no job yet, link 5)")
            else:
                link.set(BROKEN, f"{agent_name_quoted(name)} is not in the room (no job, link 5)")
            return
        last = jobs[-1]
        if last.active:
            link.set(
                UNKNOWN,
                f"job {last.id} of {agent_name_quoted(name)} is {last.status}; its agent has not joined yet",
            )
            return
        left = _ledger_time(facts, name, last.id, "left_at")
        identity = last.participant_identity or "its participant"
        link.set(
            BROKEN,
            f"{agent_name_quoted(name)} left and was not replaced",
            cause=f"Agent {agent_name_quoted(name)} ({identity}) left the room "
            f"{moment_described(left, facts.now) if left else '(the ledger has no time for it)'} and no other "
            f"{agent_name_quoted(name)} joined since: self-hosted LiveKit never re-dispatches (livekit/agents#1472).",
            fix=_FIXES["agent"],
        )
        return
    link.set(OK, "; ".join(notes))


def _ledger_waiting(facts: Facts, name: str) -> bool:
    """The ledger's latest attempt for the agent is still on its way, within its deadline."""
    history = facts.ledger_for(name)
    last = history[0] if history else None
    return (
        last is not None
        and last.status in ("pending", "requested", "job_assigned")
        and (last.deadline_at is None or last.deadline_at > facts.now)
    )


def _check_crowd(
    link: Link, facts: Facts, expected: list[str], *, managed: set[str], ghosts: dict[str, str] | None = None
) -> None:
    if not facts.live:
        link.set(UNKNOWN, "not checked: the room is not live in LiveKit")
        return
    ghosts = ghosts or {}
    for identity in ghosts:
        if any(p.identity == identity for p in facts.lk.agents):
            link.details.append(f"{identity} is a dead agent LiveKit still lists: {ghosts[identity]}")
    removed = {item["identity"]: item for d in facts.ledger for item in (d.agents_removed or [])}
    listed = {p.identity for p in facts.lk.agents}
    for identity, item in removed.items():
        if identity not in listed:
            link.details.append(f"the portal removed {identity} ({item['why']})")
    for name in expected:
        present = _alive(facts, name, ghosts)
        going = [p.identity for p in present if p.identity in removed]
        if len(present) > 1 and going:
            link.set(
                BROKEN,
                f"{len(present)} copies of {agent_name_quoted(name)} in the room; the portal is removing "
                f"{', '.join(going)}",
                cause="; ".join(f"{i}: {removed[i]['why']}" for i in going)
                + ". LiveKit does not deduplicate agents (livekit/agents#944), so the portal removes the extra "
                "one (RemoveParticipant).",
                fix="Nothing to do if it is gone within seconds. If it stays, read the dispatch's timeline "
                "(Admin › Dispatches) for LiveKit's answer to the removal, and check the Celery worker.",
            )
            return
        if len(present) > 1:
            dispatches = facts.lk_dispatches_for(name)
            link.set(
                BROKEN,
                f"{len(present)} copies of {agent_name_quoted(name)} in the room",
                cause=f"{len(present)} agents named {agent_name_quoted(name)} are in the room "
                f"({', '.join(p.identity for p in present)}), from {len(dispatches)} dispatch(es) "
                f"({', '.join(d.id for d in dispatches)}): each CreateDispatch adds another agent and "
                "nothing deduplicates them (livekit/agents#944).",
                fix="Cancel the extra dispatch (Admin › Dispatches › cancel), and let only one path "
                f"deliver {agent_name_quoted(name)}: the portal, not also the frontend's own token or API calls.",
            )
            return
    others = [
        p
        for p in facts.lk.agents
        if p.agent_name not in managed and p.agent_name not in expected and p.identity not in ghosts
    ]
    if others:
        described = [_unmanaged(p, facts) for p in others]
        fixes = []
        if any(p.agent_name == "" for p in others):
            fixes.append(
                "Give the unnamed worker an agent_name (WorkerOptions(agent_name=...)) so it only joins "
                "when named, or stop it."
            )
        if any(p.agent_name != "" for p in others):
            fixes.append(
                "Find who dispatches the other agents (their dispatch ids are above) and stop it there."
            )
        answering = f" and may be answering in place of {agent_names_quoted(expected)}" if expected else ""
        link.set(
            BROKEN,
            f"{len(others)} agent(s) the portal does not manage in the room",
            cause="; ".join(described) + f". The portal did not ask for them{answering}.",
            fix=" ".join(fixes),
        )
        return
    agents = len([p for p in facts.lk.agents if p.identity not in ghosts])
    if agents:
        link.set(OK, f"{agents} agent(s) in the room, one per expected name, none unmanaged")
    else:
        link.set(OK, "no agent in the room, so none duplicated or unmanaged")


def _unmanaged(p: LkParticipant, facts: Facts) -> str:
    dispatch = next(
        (d.id for d in facts.lk.dispatches for j in d.jobs if j.participant_identity == p.identity), ""
    )
    via = f" via {dispatch}" if dispatch else ""
    if p.agent_name == "":
        return (
            f"{p.identity} is an unnamed worker's agent{via}: a worker registered without agent_name "
            "joins every new room automatically"
        )
    if p.agent_name not in facts.agents:
        return (
            f"{p.identity} is '{p.agent_name}'{via}, an agent the portal does not know (another product's?)"
        )
    return f"{p.identity} is '{p.agent_name}'{via}, configured in the portal but not wanted in this room"
