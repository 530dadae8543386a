"""The doctor's verdicts: pure functions of a `Snapshot` (facts.py) that judge each link of
the dispatch chain ok, broken or unknown and say why in data (a finding per agent, or the
one cause of a broken link, with the fix it calls for). No reads, no words: wording.py
turns the verdicts into sentences.

The portal's own verdicts are read before what LiveKit lists. LiveKit keeps listing a dead
worker's agent participant until its connection times out (about 20 s) and that worker's
job as running for good. So:

- a *ghost* is an agent participant LiveKit still lists whose agent the portal knows is dead:
  the ledger failed its dispatch because its worker stopped answering, or the worker poll shows
  that worker silent now. A ghost is not "present";
- the ledger's verdict on an agent's attempts (no worker, failed, timed out), and the open
  incidents about it, outrank a job LiveKit lists as running: while the next attempt runs the
  doctor says "retrying: attempt k of N", and once the portal gave up it says so.

What LiveKit shows outranks what was inferred: with every expected agent present, nothing
upstream of it is broken (it is kept as information), except a disabled agent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from livekit_boundary.client import LkParticipant
from rooms_app.models import Dispatch
from watch_app.selectors import PresenceState, WorkerSilence

from .facts import (
    DispatchRecord,
    IncidentRecord,
    Removed,
    Snapshot,
    TokenRecord,
    agent_names_near,
)

OK, BROKEN, UNKNOWN = "ok", "broken", "unknown"
LINK_KEYS = ("livekit", "rules", "token", "dispatch", "job", "job_outcome", "agent", "crowd")
BAD = (Dispatch.Status.NO_WORKER, Dispatch.Status.FAILED, Dispatch.Status.TIMED_OUT)
# The links a verdict about LiveKit's side of an attempt can land on, in chain order.
LIVEKIT_LINKS = ("dispatch", "job", "job_outcome", "agent")
# Presence states that come from polling the workers' own health URLs (not from the ledger).
HEALTH_POLLED = (PresenceState.ONLINE, PresenceState.FULL, PresenceState.STALE, PresenceState.OFFLINE)


class FixKind(enum.StrEnum):
    """Where a cause has more than one fix, the one to lead with (the likeliest first);
    every other cause has one fix, which its words name."""

    START_WORKER = "start_worker"
    RENAME_PORTAL_AGENT = "rename_portal_agent"  # workers register a name a typo apart
    UNNAMED_WORKER = "unnamed_worker"
    WORKER_LOG = "worker_log"
    AGENT_LEFT = "agent_left"
    RESTART_WORKER = "restart_worker"


# --- what a verdict is made of --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluated:
    """Where the rules were evaluated: the room, for these identities."""

    room_name: str
    identities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Wanted:
    """Why the portal expects an agent in this room, and how it is delivered."""

    agent_name: str
    delivery: str  # token | explicit
    by: Literal["rule", "dispatch", "token"]
    rule: str = ""
    identity: str = ""  # whose join (rule) or token
    dispatch: DispatchRecord | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """What the portal is doing about an agent, from the ledger's latest attempt."""

    state: Literal["none", "retrying", "gave_up"]
    attempt: int = 0
    pk: int = 0
    status: str = ""


@dataclass(frozen=True, slots=True)
class WorkerStopped:
    """Why an agent is dead: its worker went silent (the poll's word), or the ledger says so."""

    silence: WorkerSilence | None
    recorded_at: datetime | None = None


# Link 1


@dataclass(frozen=True, slots=True)
class LiveKitRefused:
    url: str
    api_key: str  # "" for a client: it is told of "the portal's API key"
    method: str
    status: int


@dataclass(frozen=True, slots=True)
class LiveKitUnreachable:
    url: str
    message: str


@dataclass(frozen=True, slots=True)
class RoomNodeSilent:
    """LiveKit lists the room, but its node does not answer (a multi-node cluster, node down)."""

    url: str
    room_name: str
    message: str


@dataclass(frozen=True, slots=True)
class LiveKitAnswered:
    url: str
    room_name: str


@dataclass(frozen=True, slots=True)
class RoomLive:
    url: str
    created_at: datetime | None
    people: int
    agents: int


# Link 2


@dataclass(frozen=True, slots=True)
class AgentWanted:
    wanted: Wanted


@dataclass(frozen=True, slots=True)
class AgentsExpected:
    wanted: tuple[Wanted, ...]


@dataclass(frozen=True, slots=True)
class NoSuchAgent:
    agent: str
    close: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AgentDisabled:
    """The agent is disabled in the portal: no rule gives it (`rule` matches, if any), though
    `wanted` says why it was expected (a dispatch or token from before it was disabled)."""

    agent: str
    on: Evaluated
    rule: str = ""
    wanted: Wanted | None = None


@dataclass(frozen=True, slots=True)
class NoRuleForAgent:
    agent: str
    on: Evaluated
    reasons: tuple[RuleNotApplied, ...]


@dataclass(frozen=True, slots=True)
class RuleAgentDisabled:
    agent: str
    rule: str
    on: Evaluated


@dataclass(frozen=True, slots=True)
class NoRule:
    on: Evaluated


@dataclass(frozen=True, slots=True)
class RuleNotApplied:
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class AlsoMatchesDisabled:
    rule: str
    agent: str


@dataclass(frozen=True, slots=True)
class NoLongerExpected:
    agent: str
    dispatch: DispatchRecord
    present: tuple[str, ...]


# Link 3


@dataclass(frozen=True, slots=True)
class TokenNotUsed:
    anything_wanted: bool


@dataclass(frozen=True, slots=True)
class ForeignTokens:
    room_name: str
    people: int
    agents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NoTokenYet:
    pass


@dataclass(frozen=True, slots=True)
class TokensWithoutAgent:
    agent: str
    room_name: str
    count: int
    first_minted: datetime


@dataclass(frozen=True, slots=True)
class TokenCarried:
    agent: str
    token: TokenRecord


@dataclass(frozen=True, slots=True)
class TokenExplicitAtMint:
    agent: str
    token: TokenRecord


@dataclass(frozen=True, slots=True)
class TokenConverted:
    """The portal dispatched a token's agent explicitly because LiveKit showed no dispatch
    from the token. Why, as far as the record says: the room existed before the first token
    (`existed_before_token`), or it was created after the token was minted (`room_created_at`
    later than the token), or not known."""

    agent: str
    token: TokenRecord
    room_name: str
    existed_before_token: bool | None
    room_created_at: datetime | None


@dataclass(frozen=True, slots=True)
class TokenIgnored:
    agent: str
    token: TokenRecord
    room_name: str
    room_created_at: datetime | None
    first_minted: datetime


# Link 4


@dataclass(frozen=True, slots=True)
class NotChecked:
    why: Literal["livekit", "no_agent", "not_live_crowd"]


@dataclass(frozen=True, slots=True)
class RoomNotLive:
    """The room is not in LiveKit; the ledger's room says why (finished, gone, never joined)."""

    room_name: str
    status: str
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class DispatchesFound:
    agent: str
    ids: tuple[str, ...]
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class DispatchTokenIgnored:
    agent: str


@dataclass(frozen=True, slots=True)
class NoWorkerAttempts:
    agent: str
    failed: int
    last: DispatchRecord


@dataclass(frozen=True, slots=True)
class NoDispatchTokenRoom:
    agent: str
    only_implicit: bool = False


@dataclass(frozen=True, slots=True)
class NothingAsked:
    agent: str
    only_implicit: bool = False


@dataclass(frozen=True, slots=True)
class CeleryDown:
    agent: str
    dispatch: DispatchRecord
    heartbeat_at: datetime | None
    only_implicit: bool = False


@dataclass(frozen=True, slots=True)
class DispatchOnItsWay:
    agent: str
    dispatch: DispatchRecord


@dataclass(frozen=True, slots=True)
class DispatchEnded:
    """The ledger's last dispatch of the agent ended (failed, cancelled, or otherwise)."""

    agent: str
    dispatch: DispatchRecord
    only_implicit: bool = False


@dataclass(frozen=True, slots=True)
class SentWhileAsking:
    agent: str
    dispatch: DispatchRecord


@dataclass(frozen=True, slots=True)
class DispatchGone:
    agent: str
    dispatch: DispatchRecord
    only_implicit: bool = False


@dataclass(frozen=True, slots=True)
class NoLkDispatch:
    agent: str
    dispatch: DispatchRecord
    only_implicit: bool = False


# Link 5


@dataclass(frozen=True, slots=True)
class NoWorker:
    """No worker registered as exactly `agent` took its dispatch."""

    agent: str
    url: str
    lk_dispatch_id: str  # LiveKit's dispatch, or "" for the ledger's (then `dispatch`)
    dispatch: DispatchRecord | None
    created_at: datetime | None
    fix: FixKind
    seen_near: tuple[tuple[str, str], ...] = ()  # (name a typo apart, where seen)
    configured_near: tuple[str, ...] = ()
    named_seen: tuple[str, ...] = ()  # for the unnamed agent: named agents seen
    unnamed_seen_in: str | None = None
    health: str = ""  # the worker poll's words (staff only)
    retry: Retry = Retry("none")


@dataclass(frozen=True, slots=True)
class NoDispatchToTake:
    agent: str


@dataclass(frozen=True, slots=True)
class JobFound:
    agent: str
    job_id: str
    status: str


@dataclass(frozen=True, slots=True)
class JobWaiting:
    agent: str
    deadline_s: int
    age_s: float


# Link 6


@dataclass(frozen=True, slots=True)
class NoJobYet:
    agent: str


@dataclass(frozen=True, slots=True)
class JobRunning:
    agent: str
    job_id: str
    status: str
    replacing: int


@dataclass(frozen=True, slots=True)
class JobEnded:
    agent: str
    job_id: str


@dataclass(frozen=True, slots=True)
class JobFailed:
    agent: str
    job_id: str
    status: str
    lk_dispatch_id: str
    ended_at: datetime | None
    error: str
    retry: Retry


# Link 7


@dataclass(frozen=True, slots=True)
class AgentPresent:
    agent: str
    identity: str
    joined_at: datetime | None


@dataclass(frozen=True, slots=True)
class AgentGhost:
    agent: str
    identity: str
    why: WorkerStopped
    retry: Retry


@dataclass(frozen=True, slots=True)
class AgentNotYet:
    agent: str
    late: bool  # past its deadline: broken


@dataclass(frozen=True, slots=True)
class AgentJobNotJoined:
    agent: str
    job_id: str
    status: str


@dataclass(frozen=True, slots=True)
class AgentLeft:
    agent: str
    identity: str
    left_at: datetime | None


# Link 8


@dataclass(frozen=True, slots=True)
class GhostListed:
    identity: str
    why: WorkerStopped


@dataclass(frozen=True, slots=True)
class PortalRemoved:
    removed: Removed


@dataclass(frozen=True, slots=True)
class DuplicatesBeingRemoved:
    agent: str
    count: int
    going: tuple[Removed, ...]


@dataclass(frozen=True, slots=True)
class Duplicates:
    agent: str
    identities: tuple[str, ...]
    dispatch_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnmanagedAgent:
    identity: str
    agent_name: str
    via: str  # LiveKit's dispatch id, if known
    kind: Literal["unnamed", "unknown", "unwanted"]


@dataclass(frozen=True, slots=True)
class Unmanaged:
    agents: tuple[UnmanagedAgent, ...]
    expected: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CrowdOk:
    agents: int


# The portal's own verdicts


@dataclass(frozen=True, slots=True)
class LedgerVerdict:
    """The ledger says the agent's attempt `failed` ended badly: the portal is retrying
    (`retry_attempt` of `max_attempts`), fell back to another agent, or gave up."""

    failed: DispatchRecord
    why: WorkerStopped | None  # for an attempt whose worker stopped answering
    tail: Literal["retrying", "fell_back", "gave_up"]
    last: DispatchRecord  # the latest attempt (retrying) or the fallback's dispatch
    max_attempts: int | None
    incidents: tuple[IncidentRecord, ...]
    fix: FixKind
    url: str = ""  # the LiveKit address a worker must use
    near: tuple[str, ...] = ()  # agent names seen a typo apart, likeliest first
    underlying: Finding | None = None  # what LiveKit's side found at that link


@dataclass(frozen=True, slots=True)
class VerdictNoted:
    """A ledger verdict told at an earlier broken link, which comes first."""

    verdict: LedgerVerdict


@dataclass(frozen=True, slots=True)
class LedgerSaysEnded:
    agent: str
    dispatch: DispatchRecord
    where: RoomNotLive
    url: str


@dataclass(frozen=True, slots=True)
class LastDispatchWas:
    agent: str
    dispatch: DispatchRecord


@dataclass(frozen=True, slots=True)
class LiveKitLists:
    """What LiveKit listed at a link the portal's verdict now blames."""

    found: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class CauseOf:
    """A finding's cause kept as information (the link no longer blames it)."""

    finding: Finding


Finding = (
    LiveKitRefused
    | LiveKitUnreachable
    | RoomNodeSilent
    | LiveKitAnswered
    | RoomLive
    | AgentWanted
    | AgentsExpected
    | NoSuchAgent
    | AgentDisabled
    | NoRuleForAgent
    | RuleAgentDisabled
    | NoRule
    | RuleNotApplied
    | AlsoMatchesDisabled
    | NoLongerExpected
    | TokenNotUsed
    | ForeignTokens
    | NoTokenYet
    | TokensWithoutAgent
    | TokenCarried
    | TokenExplicitAtMint
    | TokenConverted
    | TokenIgnored
    | NotChecked
    | RoomNotLive
    | DispatchesFound
    | DispatchTokenIgnored
    | NoWorkerAttempts
    | NoDispatchTokenRoom
    | NothingAsked
    | CeleryDown
    | DispatchOnItsWay
    | DispatchEnded
    | SentWhileAsking
    | DispatchGone
    | NoLkDispatch
    | NoWorker
    | NoDispatchToTake
    | JobFound
    | JobWaiting
    | NoJobYet
    | JobRunning
    | JobEnded
    | JobFailed
    | AgentPresent
    | AgentGhost
    | AgentNotYet
    | AgentJobNotJoined
    | AgentLeft
    | GhostListed
    | PortalRemoved
    | DuplicatesBeingRemoved
    | Duplicates
    | Unmanaged
    | CrowdOk
    | LedgerVerdict
    | VerdictNoted
    | LedgerSaysEnded
    | LastDispatchWas
    | CauseOf
    | LiveKitLists
)


@dataclass(frozen=True, slots=True)
class LinkVerdict:
    """One link's verdict. `found`: what was found there (a broken link: its one cause);
    `details`: what else is worth telling; `informational`: the agent is present, so what
    was found is not blamed; `after_verdict_at`: not known, since the portal's verdict at
    that link number removed what LiveKit had."""

    key: str
    state: str = UNKNOWN
    found: tuple[Finding, ...] = ()
    details: tuple[Finding, ...] = ()
    informational: bool = False
    after_verdict_at: int = 0

    @property
    def number(self) -> int:
        return LINK_KEYS.index(self.key) + 1

    @property
    def cause(self) -> Finding | None:
        """The finding a broken link blames."""
        return self.found[0] if self.state == BROKEN and self.found else None

    def noted(self, *details: Finding) -> LinkVerdict:
        return replace(self, details=(*self.details, *details))


def _set(key: str, state: str, *found: Finding, details: tuple[Finding, ...] = ()) -> LinkVerdict:
    return LinkVerdict(key, state, tuple(found), details)


@dataclass(frozen=True, slots=True)
class Walk:
    """Every link's verdict, in chain order, and the agents the room is expected to have."""

    links: tuple[LinkVerdict, ...]
    expected: tuple[str, ...]
    live: bool

    def link(self, key: str) -> LinkVerdict:
        return self.links[LINK_KEYS.index(key)]


# --- the portal's own knowledge: ghosts, retries ---------------------------------------------


def ghosts_find(snap: Snapshot) -> dict[str, WorkerStopped]:
    """Identity -> why it is dead, for agent participants LiveKit lists in the room."""
    listed = {p.identity for p in snap.lk.agents}
    ghosts: dict[str, WorkerStopped] = {}
    for d in snap.ledger:
        if not d.participant_identity or d.participant_identity not in listed:
            continue
        silence = snap.silences.get(d.pk)
        if d.worker_stopped:
            ghosts.setdefault(d.participant_identity, WorkerStopped(silence, d.left_at or d.ended_at))
        elif d.status == Dispatch.Status.AGENT_JOINED and silence is not None and silence.holds:
            ghosts.setdefault(d.participant_identity, WorkerStopped(silence))
    return ghosts


def agents_alive(snap: Snapshot, agent_name: str, ghosts: dict[str, WorkerStopped]) -> list[LkParticipant]:
    """The agent's participants in the room, ghosts left out."""
    return [p for p in snap.agents_named(agent_name) if p.identity not in ghosts]


def retry_of(history: list[DispatchRecord]) -> Retry:
    """What the portal is doing about it, from the ledger's latest attempt."""
    last = history[0] if history else None
    if last is not None and last.is_live and last.attempt > 1:
        return Retry("retrying", last.attempt, last.pk, last.status)
    if last is not None and not last.is_live and last.status != Dispatch.Status.CANCELLED:
        return Retry("gave_up", last.attempt, last.pk, last.status)
    return Retry("none")


# --- link 1 ---------------------------------------------------------------------------------


def livekit_verdict(snap: Snapshot) -> LinkVerdict:
    url, error = snap.livekit_url, snap.lk.error
    if error is not None and snap.lk.auth_rejected:
        return _set("livekit", BROKEN, LiveKitRefused(url, snap.api_key, error.method, error.status or 0))
    if error is not None and snap.lk.room_node_silent:
        return _set("livekit", BROKEN, RoomNodeSilent(url, snap.room_name, snap.lk.error_message))
    if error is not None:
        return _set("livekit", BROKEN, LiveKitUnreachable(url, snap.lk.error_message))
    room = snap.lk.room
    if room is None:
        return _set("livekit", OK, LiveKitAnswered(url, snap.room_name))
    return _set("livekit", OK, RoomLive(url, room.created_at, len(snap.lk.people), len(snap.lk.agents)))


# --- link 2 ---------------------------------------------------------------------------------


def rules_verdict(
    snap: Snapshot, *, agent_name: str | None, ghosts: dict[str, WorkerStopped]
) -> tuple[LinkVerdict, dict[str, Wanted]]:
    """The link, and every agent the room is expected to have (rules, then the ledger)."""
    applied: dict[str, Wanted] = {}
    disabled: dict[str, str] = {}  # agent -> a matching rule
    reasons: dict[str, list[RuleNotApplied]] = {}  # agent -> why each of its rules did not apply
    for read in snap.rules:
        identity = read.join.participant_identity
        for a in read.explanation.agents:
            applied.setdefault(a.agent_name, Wanted(a.agent_name, a.delivery, "rule", a.rule, identity))
        for v in read.explanation.rules:
            if v.outcome == "agent_disabled":
                disabled.setdefault(v.agent_name, v.rule)
            elif v.outcome != "applied":
                reasons.setdefault(v.agent_name, []).append(RuleNotApplied(v.rule, v.reason))
    # A token's agent the rules no longer give (the rule was fixed) stops being expected once
    # an agent the rules do give is in the room and that token's dispatch has ended.
    right_present = any(agents_alive(snap, name, ghosts) for name in applied)
    withdrawn: dict[str, DispatchRecord] = {}
    for d in snap.ledger:
        if d.agent_name in withdrawn or d.agent_name in applied:
            continue
        if d.source == Dispatch.Source.TOKEN and right_present and not d.is_live:
            withdrawn[d.agent_name] = d
        elif d.source in (Dispatch.Source.API, Dispatch.Source.FALLBACK, Dispatch.Source.RECONCILE):
            # Agents asked for through the API (or as a fallback) are expected as well.
            applied[d.agent_name] = Wanted(d.agent_name, d.delivery, "dispatch", dispatch=d)
        elif d.source == Dispatch.Source.TOKEN:
            applied[d.agent_name] = Wanted(d.agent_name, "token", "token", d.rule_name, d.trigger, d)
    details: list[Finding] = [
        NoLongerExpected(name, d, tuple(n for n in applied if agents_alive(snap, n, ghosts)))
        for name, d in withdrawn.items()
        if name not in applied
    ]
    on = Evaluated(
        snap.room_name,
        tuple(r.join.participant_identity for r in snap.rules if r.join.participant_identity),
    )
    # An agent the ledger expects but the portal has disabled since: the words must say so.
    off = [
        w for w in applied.values() if (cfg := snap.agents.get(w.agent_name)) is not None and not cfg.enabled
    ]

    if agent_name is not None:
        agent = snap.agents.get(agent_name)
        if agent_name in applied and (agent is None or agent.enabled):
            return _set("rules", OK, AgentWanted(applied[agent_name]), details=tuple(details)), applied
        if agent is None:
            close = tuple(agent_names_near(agent_name, snap.agents))
            return _set("rules", BROKEN, NoSuchAgent(agent_name, close), details=tuple(details)), applied
        if not agent.enabled:
            cause = AgentDisabled(agent_name, on, disabled.get(agent_name, ""), applied.get(agent_name))
            return _set("rules", BROKEN, cause, details=tuple(details)), applied
        why = tuple(reasons.get(agent_name, ()))
        return _set("rules", BROKEN, NoRuleForAgent(agent_name, on, why), details=(*details, *why)), applied

    if off:
        w = off[0]
        cause = AgentDisabled(w.agent_name, on, disabled.get(w.agent_name, ""), w)
        return _set("rules", BROKEN, cause, details=tuple(details)), applied
    if applied:
        details += [AlsoMatchesDisabled(rule, name) for name, rule in disabled.items() if name not in applied]
        return _set("rules", OK, AgentsExpected(tuple(applied.values())), details=tuple(details)), applied
    if disabled:
        name, rule = next(iter(disabled.items()))
        return _set("rules", BROKEN, RuleAgentDisabled(name, rule, on), details=tuple(details)), {}
    return _set("rules", BROKEN, NoRule(on), details=tuple(details)), {}


# --- link 3 ---------------------------------------------------------------------------------


def token_verdict(snap: Snapshot, wanted: dict[str, Wanted]) -> tuple[LinkVerdict, set[str]]:
    """The link, and the agents whose token delivery is broken. Reads the tokens the portal
    minted (with the agents each carried), not the dispatch rows their application produced."""
    by_token = [w for w in wanted.values() if w.delivery == "token"]
    if not by_token:
        return _set("token", OK, TokenNotUsed(bool(wanted))), set()
    people = snap.lk.people
    if not snap.tokens:
        if snap.live and people:
            names = tuple(w.agent_name for w in by_token)
            return _set("token", BROKEN, ForeignTokens(snap.room_name, len(people), names)), set(names)
        return _set("token", UNKNOWN, NoTokenYet()), set()
    lk_room = snap.lk.room
    room_created = lk_room.created_at if lk_room is not None else None
    if room_created is None and snap.room is not None:
        room_created = snap.room.started_at
    first_minted = snap.tokens[-1].minted_at
    existed_before = bool(snap.room is not None and snap.room.existed_before_token) or bool(
        lk_room is not None and lk_room.created_at is not None and lk_room.created_at < first_minted
    )
    notes: list[Finding] = []
    for w in by_token:
        carrying = snap.tokens_carrying(w.agent_name)
        if not carrying:
            missing = TokensWithoutAgent(w.agent_name, snap.room_name, len(snap.tokens), first_minted)
            return _set("token", BROKEN, missing), {w.agent_name}
        token, item = carrying[0]
        rows = snap.ledger_for(w.agent_name)
        if item.delivery == "explicit":
            notes.append(TokenExplicitAtMint(w.agent_name, token))
        elif any(d.source == Dispatch.Source.TOKEN and d.delivery == "explicit" for d in rows):
            existed = snap.room.existed_before_token if snap.room is not None else None
            notes.append(TokenConverted(w.agent_name, token, snap.room_name, existed, room_created))
        elif snap.live and not snap.lk_dispatches_for(w.agent_name) and existed_before:
            ignored = TokenIgnored(w.agent_name, token, snap.room_name, room_created, first_minted)
            return _set("token", BROKEN, ignored), {w.agent_name}
        else:
            notes.append(TokenCarried(w.agent_name, token))
    return _set("token", OK, *notes), set()


# --- the room is not live -------------------------------------------------------------------


def not_live_verdicts(snap: Snapshot, expected: list[str]) -> dict[str, LinkVerdict]:
    """The room is not in LiveKit: only the ledger can say what became of its agents."""
    room = snap.room
    where = RoomNotLive(snap.room_name, room.status if room else "", room.finished_at if room else None)
    links = {key: _set(key, UNKNOWN, where) for key in ("dispatch", "job", "job_outcome", "agent", "crowd")}
    for name in expected:
        history = snap.ledger_for(name)
        if not history:
            continue
        last = history[0]
        key = {"no_worker": "job", "failed": "job_outcome", "timed_out": "agent"}.get(last.status)
        if key is None:
            links["agent"] = links["agent"].noted(LastDispatchWas(name, last))
            continue
        links[key] = _set(key, BROKEN, LedgerSaysEnded(name, last, where, snap.livekit_url))
    return links


# --- link 4 ---------------------------------------------------------------------------------


def _no_worker_attempts(history: list[DispatchRecord]) -> list[DispatchRecord]:
    return [d for d in history if d.status == Dispatch.Status.NO_WORKER]


def dispatch_verdict(snap: Snapshot, wanted: dict[str, Wanted], token_broken: set[str]) -> LinkVerdict:
    found: list[Finding] = []
    waiting: list[Finding] = []
    for name, w in wanted.items():
        dispatches = snap.lk_dispatches_for(name)
        if dispatches:
            found.append(DispatchesFound(name, tuple(d.id for d in dispatches), dispatches[0].created_at))
            continue
        if name in token_broken:
            return _set("dispatch", BROKEN, DispatchTokenIgnored(name))
        history = snap.ledger_for(name)
        failed = _no_worker_attempts(history)
        if failed:
            # The portal deleted the dispatch no worker took; link 5 names why.
            waiting.append(NoWorkerAttempts(name, len(failed), history[0]))
            continue
        implicit = any(d.agent_name == "" for d in snap.lk.dispatches) and name != ""
        state, finding = _missing_dispatch_why(snap, name, w, history[0] if history else None, implicit)
        if state == UNKNOWN:
            waiting.append(finding)
            continue
        return _set("dispatch", state, finding)
    if waiting:
        return _set("dispatch", UNKNOWN, *waiting, *found)
    return _set("dispatch", OK, *found)


def _missing_dispatch_why(
    snap: Snapshot, name: str, w: Wanted, last: DispatchRecord | None, implicit: bool
) -> tuple[str, Finding]:
    """For an expected agent with no dispatch in LiveKit."""
    if last is None:
        if w.delivery == "token":
            return BROKEN, NoDispatchTokenRoom(name, implicit)
        return BROKEN, NothingAsked(name, implicit)
    if last.status in ("pending", "requested") and not last.livekit_dispatch_id:
        if not snap.worker_alive:
            return BROKEN, CeleryDown(name, last, snap.heartbeat_at, implicit)
        return UNKNOWN, DispatchOnItsWay(name, last)
    if not last.is_live:
        return BROKEN, DispatchEnded(name, last, implicit)
    if last.livekit_dispatch_id and last.requested_at is not None and last.requested_at >= snap.now:
        # LiveKit is asked before the ledger is read: a dispatch sent in between is not in its
        # answer yet, which says nothing about it.
        return UNKNOWN, SentWhileAsking(name, last)
    if last.livekit_dispatch_id:
        return BROKEN, DispatchGone(name, last, implicit)
    return BROKEN, NoLkDispatch(name, last, implicit)


# --- link 5 ---------------------------------------------------------------------------------


def job_verdict(snap: Snapshot, expected: list[str]) -> LinkVerdict:
    found: list[Finding] = []
    waiting: list[Finding] = []
    for name in expected:
        dispatches = snap.lk_dispatches_for(name)
        history = snap.ledger_for(name)
        if not dispatches:
            gave_up = _no_worker_attempts(history)
            if gave_up:
                ended = gave_up[0]
                return _set(
                    "job", BROKEN, no_worker(snap, name, "", ended, ended.requested_at or ended.created_at)
                )
            return _set("job", UNKNOWN, NoDispatchToTake(name))
        latest = dispatches[-1]
        jobs = [j for d in dispatches for j in d.jobs]
        if jobs:
            found.append(JobFound(name, jobs[-1].id, jobs[-1].status))
            continue
        age = (snap.now - latest.created_at).total_seconds() if latest.created_at else None
        deadline = snap.deadline_s(name)
        if age is not None and age < deadline and not _no_worker_attempts(history):
            waiting.append(JobWaiting(name, deadline, age))
            continue
        return _set("job", BROKEN, no_worker(snap, name, latest.id, None, latest.created_at))
    if waiting:
        return _set("job", UNKNOWN, *waiting, *found)
    return _set("job", OK, *found)


def no_worker(
    snap: Snapshot, name: str, lk_dispatch_id: str, dispatch: DispatchRecord | None, created: datetime | None
) -> NoWorker:
    """No worker took the agent's dispatch. The likeliest fix first: when workers register a
    name a typo apart and no configured agent has it, the portal's agent name is the typo."""
    seen = snap.names_seen or {}
    close = agent_names_near(name, seen)
    configured_close = tuple(n for n in agent_names_near(name, snap.agents) if n not in close)
    presence = snap.presence.get(name)
    health = presence.message if presence and presence.state in HEALTH_POLLED and snap.staff else ""
    # The admin registered the workers' health URLs; their errors name internal addresses.
    portal_typo = bool(name) and any(n not in snap.agents for n in close)
    if name == "":
        fix = FixKind.UNNAMED_WORKER
    elif portal_typo:
        fix = FixKind.RENAME_PORTAL_AGENT
    else:
        fix = FixKind.START_WORKER
    history = snap.ledger_for(name)
    last = history[0] if history else None
    if last is not None and last.is_live:
        retry = Retry("retrying", last.attempt, last.pk, last.status)
    elif last is not None and last.status == Dispatch.Status.NO_WORKER:
        retry = Retry("gave_up", last.attempt, last.pk, last.status)
    else:
        retry = Retry("none")
    return NoWorker(
        agent=name,
        url=snap.livekit_url,
        lk_dispatch_id=lk_dispatch_id,
        dispatch=dispatch,
        created_at=created,
        fix=fix,
        seen_near=tuple((n, seen[n]) for n in close),
        configured_near=configured_close,
        named_seen=tuple(sorted(n for n in seen if n)) if name == "" else (),
        unnamed_seen_in=seen.get("") if name else None,
        health=health,
        retry=retry,
    )


# --- link 6 ---------------------------------------------------------------------------------


def _ledger_time(
    snap: Snapshot, name: str, job_id: str, attr: Literal["ended_at", "left_at"]
) -> datetime | None:
    for d in snap.ledger_for(name):
        if d.livekit_job_id == job_id or (d.participant_identity and d.participant_identity.endswith(job_id)):
            moment: datetime | None = getattr(d, attr)
            return moment or d.left_at or d.ended_at
    return None


def job_outcome_verdict(snap: Snapshot, expected: list[str]) -> LinkVerdict:
    notes: list[Finding] = []
    for name in expected:
        jobs = [(d, j) for d in snap.lk_dispatches_for(name) for j in d.jobs]
        if not jobs:
            return _set("job_outcome", UNKNOWN, NoJobYet(name))
        dispatch, job = jobs[-1]
        if job.active:
            earlier = [j for _, j in jobs[:-1] if j.status == "failed"]
            notes.append(JobRunning(name, job.id, job.status, len(earlier)))
            continue
        if job.status in ("failed", "cancelled"):
            ended = _ledger_time(snap, name, job.id, "ended_at")
            cause = JobFailed(
                name, job.id, job.status, dispatch.id, ended, job.error, retry_of(snap.ledger_for(name))
            )
            return _set("job_outcome", BROKEN, cause)
        notes.append(JobEnded(name, job.id))
    return _set("job_outcome", OK, *notes)


# --- link 7 ---------------------------------------------------------------------------------


def _ledger_waiting(snap: Snapshot, name: str) -> bool:
    """The ledger's latest attempt for the agent is still on its way, within its deadline."""
    history = snap.ledger_for(name)
    last = history[0] if history else None
    return (
        last is not None
        and last.status in ("pending", "requested", "job_assigned")
        and (last.deadline_at is None or last.deadline_at > snap.now)
    )


def agent_verdict(snap: Snapshot, expected: list[str], ghosts: dict[str, WorkerStopped]) -> LinkVerdict:
    notes: list[Finding] = []
    for name in expected:
        present = agents_alive(snap, name, ghosts)
        if present:
            notes.append(AgentPresent(name, present[0].identity, present[0].joined_at))
            continue
        dead = [p for p in snap.agents_named(name) if p.identity in ghosts]
        if dead:
            ghost = dead[0]
            cause = AgentGhost(name, ghost.identity, ghosts[ghost.identity], retry_of(snap.ledger_for(name)))
            return _set("agent", BROKEN, cause)
        jobs = [j for d in snap.lk_dispatches_for(name) for j in d.jobs]
        if not jobs:
            late = not (snap.within_deadline(name) or _ledger_waiting(snap, name))
            return _set("agent", BROKEN if late else UNKNOWN, AgentNotYet(name, late))
        last = jobs[-1]
        if last.active:
            return _set("agent", UNKNOWN, AgentJobNotJoined(name, last.id, last.status))
        left = _ledger_time(snap, name, last.id, "left_at")
        return _set("agent", BROKEN, AgentLeft(name, last.participant_identity, left))
    return _set("agent", OK, *notes)


# --- link 8 ---------------------------------------------------------------------------------


def crowd_verdict(
    snap: Snapshot, expected: list[str], *, managed: set[str], ghosts: dict[str, WorkerStopped]
) -> LinkVerdict:
    if not snap.live:
        return _set("crowd", UNKNOWN, NotChecked("not_live_crowd"))
    listed = {p.identity for p in snap.lk.agents}
    details: list[Finding] = [GhostListed(i, why) for i, why in ghosts.items() if i in listed]
    removed = {r.identity: r for d in snap.ledger for r in d.agents_removed}
    details += [PortalRemoved(r) for i, r in removed.items() if i not in listed]
    for name in expected:
        present = agents_alive(snap, name, ghosts)
        going = tuple(removed[p.identity] for p in present if p.identity in removed)
        if len(present) > 1 and going:
            return _set(
                "crowd", BROKEN, DuplicatesBeingRemoved(name, len(present), going), details=tuple(details)
            )
        if len(present) > 1:
            ids = tuple(d.id for d in snap.lk_dispatches_for(name))
            cause = Duplicates(name, tuple(p.identity for p in present), ids)
            return _set("crowd", BROKEN, cause, details=tuple(details))
    others = [
        p
        for p in snap.lk.agents
        if p.agent_name not in managed and p.agent_name not in expected and p.identity not in ghosts
    ]
    if others:
        unmanaged = Unmanaged(tuple(_unmanaged(p, snap) for p in others), tuple(expected))
        return _set("crowd", BROKEN, unmanaged, details=tuple(details))
    count = len([p for p in snap.lk.agents if p.identity not in ghosts])
    return _set("crowd", OK, CrowdOk(count), details=tuple(details))


def _unmanaged(p: LkParticipant, snap: Snapshot) -> UnmanagedAgent:
    via = next((d.id for d in snap.lk.dispatches for j in d.jobs if j.participant_identity == p.identity), "")
    name = p.agent_name or ""
    kind: Literal["unnamed", "unknown", "unwanted"]
    kind = "unnamed" if name == "" else "unknown" if name not in snap.agents else "unwanted"
    return UnmanagedAgent(p.identity, name, via, kind)


# --- the ledger's verdicts first ------------------------------------------------------------


def _link_of(d: DispatchRecord) -> str:
    """Where in the chain the attempt broke."""
    if d.status == Dispatch.Status.NO_WORKER:
        return "job"
    if d.status == Dispatch.Status.TIMED_OUT or d.joined_at is not None:
        return "agent"  # its job ran without its agent joining, or its agent left or died
    if d.livekit_job_id:
        return "job_outcome"
    return "dispatch"


_LEDGER_FIX = {
    "job": FixKind.START_WORKER,
    "job_outcome": FixKind.WORKER_LOG,
    "agent": FixKind.AGENT_LEFT,
    "dispatch": FixKind.AGENT_LEFT,
}


def ledger_verdicts(
    links: dict[str, LinkVerdict], snap: Snapshot, expected: list[str], ghosts: dict[str, WorkerStopped]
) -> dict[str, LinkVerdict]:
    """For each expected agent not alive in the room whose latest attempt ended badly (the
    portal gave up) or replaces one that did (retrying): the link where that attempt broke
    is broken with the ledger's verdict, whatever LiveKit lists there (a job "running")."""
    links = dict(links)
    for name in expected:
        if agents_alive(snap, name, ghosts):
            continue
        history = snap.ledger_for(name)
        if not history:
            continue
        last = history[0]
        agent = snap.agents.get(name)
        tail: Literal["retrying", "fell_back", "gave_up"]
        if last.is_live:
            failed = next((d for d in history if d.pk == last.previous_id and d.status in BAD), None)
            if failed is None:
                continue
            tail, latest = "retrying", last
        elif last.status in BAD:
            failed = last
            fallback = next((d for d in snap.ledger if d.previous_id == last.pk), None)
            tail, latest = ("fell_back", fallback) if fallback is not None else ("gave_up", last)
        else:
            continue
        key = _link_of(failed)
        fix = _LEDGER_FIX[key]
        near: tuple[str, ...] = ()
        if key == "job":
            found = no_worker(snap, name, "", failed, failed.requested_at or failed.created_at)
            fix, near = found.fix, tuple(n for n, _ in found.seen_near)
        why = (
            WorkerStopped(snap.silences.get(failed.pk), failed.left_at or failed.ended_at)
            if failed.worker_stopped
            else None
        )
        verdict = LedgerVerdict(
            failed,
            why,
            tail,
            latest,
            agent.max_attempts if agent is not None else None,
            tuple(snap.incidents_about(name)),
            fix,
            snap.livekit_url,
            near,
        )
        links = _broken_at(links, key, verdict, gave_up=not last.is_live)
    return links


def _broken_at(
    links: dict[str, LinkVerdict], key: str, verdict: LedgerVerdict, *, gave_up: bool
) -> dict[str, LinkVerdict]:
    target = links[key]
    upstream = [k for k in ("livekit", "rules", "token") if links[k].state == BROKEN]
    earlier = [k for k in LIVEKIT_LINKS[: LIVEKIT_LINKS.index(key)] if links[k].state == BROKEN]
    if upstream or (earlier and not gave_up):
        # Something before it is broken now (for the attempt running): that comes first.
        first = (upstream or earlier)[0]
        links[first] = links[first].noted(VerdictNoted(verdict))
        return links
    for k in earlier:
        # After giving up the portal removed what LiveKit had: a consequence, not the cause.
        link = links[k]
        links[k] = replace(
            link,
            state=UNKNOWN,
            details=(*link.details, *(CauseOf(f) for f in link.found[:1])),
            after_verdict_at=target.number,
        )
    if target.state == BROKEN:  # LiveKit's side already found it: keep its cause, lead with the verdict
        links[key] = replace(
            target,
            found=(replace(verdict, underlying=target.found[0]),),
            details=(*target.details, target.found[0]),
        )
        return links
    moved = (LiveKitLists(target.found),) if target.found and target.state in (OK, UNKNOWN) else ()
    links[key] = replace(target, state=BROKEN, found=(verdict,), details=(*target.details, *moved))
    return links


# --- the walk -------------------------------------------------------------------------------


def walk(snap: Snapshot, *, agent_name: str | None = None) -> Walk:
    """Judge every link from the snapshot alone (optionally for one agent)."""
    links: dict[str, LinkVerdict] = {"livekit": livekit_verdict(snap)}
    ghosts = ghosts_find(snap)
    links["rules"], managed = rules_verdict(snap, agent_name=agent_name, ghosts=ghosts)
    if agent_name is not None:
        wanted = {agent_name: managed[agent_name]} if agent_name in managed else {}
    else:
        wanted = managed
    expected = list(wanted)
    links["token"], token_broken = token_verdict(snap, wanted)
    if not snap.reachable:
        for key in ("dispatch", "job", "job_outcome", "agent", "crowd"):
            links[key] = _set(key, UNKNOWN, NotChecked("livekit"))
    elif not expected:
        for key in ("dispatch", "job", "job_outcome", "agent"):
            links[key] = _set(key, UNKNOWN, NotChecked("no_agent"))
        links["crowd"] = crowd_verdict(snap, expected, managed=set(managed), ghosts=ghosts)
    elif not snap.live:
        links.update(not_live_verdicts(snap, expected))
    else:
        links["dispatch"] = dispatch_verdict(snap, wanted, token_broken)
        links["job"] = job_verdict(snap, expected)
        links["job_outcome"] = job_outcome_verdict(snap, expected)
        links["agent"] = agent_verdict(snap, expected, ghosts)
        links["crowd"] = crowd_verdict(snap, expected, managed=set(managed), ghosts=ghosts)
        links = ledger_verdicts(links, snap, expected, ghosts)
    if snap.live and expected and all(agents_alive(snap, name, ghosts) for name in expected):
        links = _present_outranks_inferred(links)
    return Walk(tuple(links[key] for key in LINK_KEYS), tuple(expected), snap.live)


def _present_outranks_inferred(links: dict[str, LinkVerdict]) -> dict[str, LinkVerdict]:
    """What LiveKit shows outranks what was inferred: with every expected agent present in
    the room, nothing upstream of it (rules, token, dispatch, job) is "broken" or "not known"
    (the real server lists a worker's job in ListDispatch seconds after its agent joined, and
    an agent dispatched through the API has no token); what was found there is kept as
    information. A disabled agent stays broken: the portal no longer wants it."""
    for key in ("rules", "token", "dispatch", "job", "job_outcome"):
        link = links[key]
        if link.state not in (BROKEN, UNKNOWN) or isinstance(link.cause, AgentDisabled):
            continue
        kept = tuple(CauseOf(f) for f in link.found[:1]) if link.state == BROKEN else ()
        links[key] = replace(link, state=OK, informational=True, details=(*link.details, *kept))
    return links
