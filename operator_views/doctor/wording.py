"""Plain words for people: every sentence the doctor prints, made from the verdicts
(verdicts.py), and the diagnosis they make for the page, the API and the terminal. Words
recorded elsewhere are quoted as they are: LiveKit's error messages, the ledger's last
errors, the worker poll's description of a silent or full worker."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rooms_app.models import Room
from rooms_app.services import WORKER_STOPPED

from .verdicts import (
    BROKEN,
    LINK_KEYS,
    OK,
    UNKNOWN,
    AgentDisabled,
    AgentGhost,
    AgentJobNotJoined,
    AgentLeft,
    AgentNotYet,
    AgentPresent,
    AgentsExpected,
    AgentWanted,
    AlsoMatchesDisabled,
    CauseOf,
    CeleryDown,
    CrowdOk,
    DispatchEnded,
    DispatchesFound,
    DispatchGone,
    DispatchOnItsWay,
    DispatchTokenIgnored,
    Duplicates,
    DuplicatesBeingRemoved,
    Evaluated,
    Finding,
    FixKind,
    ForeignTokens,
    GhostListed,
    JobEnded,
    JobFailed,
    JobFound,
    JobRunning,
    JobWaiting,
    LastDispatchWas,
    LedgerSaysEnded,
    LedgerVerdict,
    LinkVerdict,
    LiveKitAnswered,
    LiveKitLists,
    LiveKitRefused,
    LiveKitUnreachable,
    NoDispatchTokenRoom,
    NoDispatchToTake,
    NoJobYet,
    NoLkDispatch,
    NoLongerExpected,
    NoRule,
    NoRuleForAgent,
    NoSuchAgent,
    NotChecked,
    NothingAsked,
    NoTokenYet,
    NoWorker,
    NoWorkerAttempts,
    PortalRemoved,
    Retry,
    RoomLive,
    RoomNodeSilent,
    RoomNotLive,
    RuleAgentDisabled,
    RuleNotApplied,
    SentWhileAsking,
    TokenCarried,
    TokenConverted,
    TokenExplicitAtMint,
    TokenIgnored,
    TokenNotUsed,
    TokensWithoutAgent,
    Unmanaged,
    UnmanagedAgent,
    VerdictNoted,
    Walk,
    Wanted,
    WorkerStopped,
)

HEALTHY, WAITING, BROKEN_STATUS, LIVEKIT_UNAVAILABLE = "healthy", "waiting", "broken", "livekit_unavailable"
EXIT_CODES = {HEALTHY: 0, WAITING: 0, BROKEN_STATUS: 1, LIVEKIT_UNAVAILABLE: 2}

LINK_TITLES = {
    "livekit": "LiveKit reachable, credentials accepted",
    "rules": "Rules give the room its agents, agents enabled",
    "token": "Token path: a token from the portal carried the agent, and LiveKit could honour it",
    "dispatch": "Dispatch present in LiveKit",
    "job": "Job created: a worker took the dispatch",
    "job_outcome": "Job did not fail or end",
    "agent": "Agent participant present",
    "crowd": "No duplicate or unmanaged agents",
}
assert tuple(LINK_TITLES) == LINK_KEYS


# --- the worded answer ----------------------------------------------------------------------


@dataclass(slots=True)
class Link:
    number: int
    key: str
    title: str
    state: str = UNKNOWN
    summary: str = ""
    details: list[str] = field(default_factory=list)
    cause: str = ""
    fix: str = ""


@dataclass(slots=True)
class Diagnosis:
    room_name: str
    agent: str | None
    identity: str | None
    checked_at: datetime
    livekit_url: str
    room_live: bool
    expected_agents: list[str]
    links: list[Link]

    @property
    def first_broken(self) -> Link | None:
        return next((link for link in self.links if link.state == BROKEN), None)

    @property
    def status(self) -> str:
        broken = self.first_broken
        if broken is None:
            return HEALTHY if all(link.state == OK for link in self.links) else WAITING
        return LIVEKIT_UNAVAILABLE if broken.key == "livekit" else BROKEN_STATUS

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def summary(self) -> str:
        broken = self.first_broken
        if broken is not None:
            return f"Broken at link {broken.number} ({broken.title}): {broken.summary}."
        if self.status == HEALTHY:
            names = agent_names_quoted(self.expected_agents) or "no agent"
            return f"Healthy: {names} in room '{self.room_name}' as expected."
        waiting = next(link for link in self.links if link.state == UNKNOWN)
        return f"Nothing broken yet; not known at link {waiting.number} ({waiting.title}): {waiting.summary}."

    def as_dict(self) -> dict[str, Any]:
        broken = self.first_broken
        return {
            "room_name": self.room_name,
            "agent": self.agent,
            "identity": self.identity,
            "checked_at": self.checked_at.isoformat(),
            "livekit_url": self.livekit_url,
            "room_live": self.room_live,
            "status": self.status,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "first_broken_link": broken.number if broken else None,
            "cause": broken.cause if broken else "",
            "fix": broken.fix if broken else "",
            "expected_agents": list(self.expected_agents),
            "links": [
                {
                    "number": link.number,
                    "key": link.key,
                    "title": link.title,
                    "state": link.state,
                    "summary": link.summary,
                    "details": list(link.details),
                    "cause": link.cause,
                    "fix": link.fix,
                }
                for link in self.links
            ],
        }


def diagnosis_worded(
    walk: Walk,
    *,
    room_name: str,
    agent: str | None,
    identity: str | None,
    now: datetime,
    livekit_url: str,
    staff: bool,
) -> Diagnosis:
    words = _Words(now, staff)
    return Diagnosis(
        room_name=room_name,
        agent=agent,
        identity=identity,
        checked_at=now,
        livekit_url=livekit_url,
        room_live=walk.live,
        expected_agents=list(walk.expected),
        links=[words.link(v) for v in walk.links],
    )


# --- names and times ------------------------------------------------------------------------


def agent_name_quoted(agent_name: str) -> str:
    return f"'{agent_name}'" if agent_name else "the unnamed agent"


def agent_names_quoted(names: Iterable[str]) -> str:
    return ", ".join(agent_name_quoted(n) for n in names)


def _for(identity: str) -> str:
    """' for 'ann'', or nothing when no identity is known."""
    return f" for '{identity}'" if identity else ""


def moment_described(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "at an unknown time"
    seconds = (now - moment).total_seconds()
    stamp = moment.astimezone(UTC).strftime("%H:%M:%S UTC")
    if seconds < 0:
        return f"at {stamp}"
    if seconds < 90:
        ago = f"{seconds:.0f} s ago"
    elif seconds < 5400:
        ago = f"{seconds / 60:.0f} min ago"
    elif seconds < 172800:
        ago = f"{seconds / 3600:.0f} h ago"
    else:
        return f"on {moment:%Y-%m-%d %H:%M} UTC"
    return f"at {stamp} ({ago})"


def near_names_question(names: Iterable[str]) -> str:
    """'did you mean 'demo-agent'?' for names seen a typo apart ('' for none)."""
    quoted = [f"'{n}'" for n in names]
    if not quoted:
        return ""
    return "did you mean " + (" or ".join(quoted)) + "?"


# --- the sentences --------------------------------------------------------------------------

_EXPLAIN = "Test it on the rule list's 'Explain / test rules' page with this room name."
_WORKER_FIX = "Start the Celery worker (`make run` starts one; else `celery -A dispatchportal worker`)."


@dataclass(frozen=True, slots=True)
class _Words:
    now: datetime
    staff: bool

    def at(self, moment: datetime | None) -> str:
        return moment_described(moment, self.now)

    # A link ---------------------------------------------------------------------------------

    def link(self, v: LinkVerdict) -> Link:
        link = Link(v.number, v.key, LINK_TITLES[v.key], v.state)
        link.summary = "; ".join(self.summary(f) for f in v.found)
        cause = v.cause
        if cause is not None:
            link.cause = self.cause(cause)
            link.fix = self.fix(cause)
        link.details = [self.detail(d) for d in v.details]
        if v.after_verdict_at:
            link.summary = f"{link.summary} (after the portal's verdict at link {v.after_verdict_at})"
        if v.informational:
            link.summary = f"informational (the agent is present and running): {link.summary}"
        return link

    def detail(self, f: Finding) -> str:
        if isinstance(f, CauseOf):
            return self.cause(f.finding)
        if isinstance(f, LiveKitLists):
            return "LiveKit lists: " + "; ".join(self.summary(x) for x in f.found)
        if isinstance(f, VerdictNoted):
            return f"the portal's verdict: {self.summary(f.verdict)}"
        if isinstance(f, RuleNotApplied):
            return f"rule '{f.rule}': {f.reason}"
        return self.summary(f)

    # Summaries: one line per finding ---------------------------------------------------------

    def summary(self, f: Finding) -> str:  # noqa: C901 (one case per finding)
        match f:
            case LiveKitRefused():
                return f"LiveKit at {f.url} refused the portal's API key"
            case LiveKitUnreachable():
                return f"cannot reach LiveKit at {f.url}"
            case RoomNodeSilent():
                return (
                    f"LiveKit at {f.url} answered, but the LiveKit node hosting room '{f.room_name}' does not"
                )
            case LiveKitAnswered():
                return f"LiveKit at {f.url} answered; room '{f.room_name}' is not live there"
            case RoomLive():
                return (
                    f"LiveKit at {f.url} answered; room is live, created {self.at(f.created_at)}, "
                    f"with {f.people} participant(s) and {f.agents} agent(s)"
                )
            case AgentWanted():
                w = f.wanted
                return f"{agent_name_quoted(w.agent_name)} is wanted by {self.wanted_by(w)} ({w.delivery} delivery)"
            case AgentsExpected():
                return "expected: " + "; ".join(
                    f"{agent_name_quoted(w.agent_name)} by {self.wanted_by(w)} ({w.delivery})"
                    for w in f.wanted
                )
            case NoSuchAgent():
                return f"no {self._missing(f.agent)} is configured"
            case AgentDisabled():
                return f"agent {agent_name_quoted(f.agent)} is disabled in the portal"
            case NoRuleForAgent():
                return f"no enabled rule gives {agent_name_quoted(f.agent)} to this room"
            case RuleAgentDisabled():
                return f"the matching rule's agent {agent_name_quoted(f.agent)} is disabled"
            case NoRule():
                return "no rule gives this room an agent"
            case RuleNotApplied():
                return f"rule '{f.rule}': {f.reason}"
            case AlsoMatchesDisabled():
                return f"rule '{f.rule}' also matches, but its agent {agent_name_quoted(f.agent)} is disabled"
            case NoLongerExpected():
                d = f.dispatch
                return (
                    f"{agent_name_quoted(f.agent)} is no longer expected: {self.token_of(d.trigger)} carried it "
                    f"(rule '{d.rule_name}'), but no rule gives it now, and {agent_names_quoted(f.present)} is in "
                    f"the room (its dispatch #{d.pk} ended {d.status_label.lower()})"
                )
            case TokenNotUsed():
                return "not used: no expected agent travels in a token" if f.anything_wanted else "not used"
            case ForeignTokens():
                return "no token carrying the agent came from the portal"
            case NoTokenYet():
                return "no token minted for this room yet"
            case TokensWithoutAgent():
                return f"the tokens minted did not carry {agent_name_quoted(f.agent)}"
            case TokenCarried():
                return f"{agent_name_quoted(f.agent)}: carried in {self.minted(f.token.participant_identity, f.token.minted_at)}"
            case TokenExplicitAtMint():
                return (
                    f"{agent_name_quoted(f.agent)}: the room already existed when "
                    f"{self.minted(f.token.participant_identity, f.token.minted_at)} was minted, so the portal "
                    "dispatched it explicitly"
                )
            case TokenConverted():
                return self.converted(f)
            case TokenIgnored():
                return f"the token carried {agent_name_quoted(f.agent)}, but the room existed before the first join"
            case NotChecked():
                return {
                    "livekit": "not checked: LiveKit could not be asked (link 1)",
                    "no_agent": "not checked: no agent is expected in this room (link 2)",
                    "not_live_crowd": "not checked: the room is not live in LiveKit",
                }[f.why]
            case RoomNotLive():
                return f"not checked: {self.where(f)}"
            case DispatchesFound():
                return f"{agent_name_quoted(f.agent)}: {', '.join(f.ids)}, created {self.at(f.created_at)}"
            case NoWorkerAttempts():
                last = f.last
                text = f"{agent_name_quoted(f.agent)}: {f.failed} attempt(s) ended with no worker taking the job (link 5); "
                if last.is_live:
                    return text + f"attempt {last.attempt} (#{last.pk}) is {last.status_label.lower()}"
                return text + "the portal gave up"
            case CeleryDown():
                return (
                    f"dispatch #{f.dispatch.pk} of {agent_name_quoted(f.agent)} waits for a Celery worker, "
                    "and none is running"
                )
            case DispatchOnItsWay():
                d = f.dispatch
                if d.delivery == "token":
                    what = "waiting for the participant to join with the token that carries it"
                else:
                    what = "the Celery worker (running) is sending it to LiveKit"
                error = f"; last error: {d.last_error}" if d.last_error else ""
                return (
                    f"{agent_name_quoted(f.agent)}: dispatch #{d.pk} {d.status_label.lower()} since "
                    f"{self.at(d.created_at)}; {what}{error}"
                )
            case SentWhileAsking():
                return (
                    f"{agent_name_quoted(f.agent)}: dispatch #{f.dispatch.pk} was sent to LiveKit "
                    f"({f.dispatch.livekit_dispatch_id}) while the doctor was asking; ask again"
                )
            case (
                DispatchTokenIgnored()
                | NoDispatchTokenRoom()
                | NothingAsked()
                | DispatchEnded()
                | DispatchGone()
                | NoLkDispatch()
            ):
                return f"no dispatch for {agent_name_quoted(f.agent)} in LiveKit"
            case NoWorker():
                if f.lk_dispatch_id:
                    return f"no worker took dispatch {f.lk_dispatch_id} of {agent_name_quoted(f.agent)}"
                # Not "'x''s dispatch": the name is quoted, the possessive would double the quote.
                return (
                    f"no worker registered as '{f.agent}' took the dispatch of {agent_name_quoted(f.agent)}"
                )
            case NoDispatchToTake():
                return f"no dispatch for {agent_name_quoted(f.agent)} to take (link 4)"
            case JobFound():
                return f"{agent_name_quoted(f.agent)}: job {f.job_id} ({f.status})"
            case JobWaiting():
                return (
                    f"{agent_name_quoted(f.agent)}: waiting, {f.deadline_s - f.age_s:.0f} s left of its "
                    f"{f.deadline_s} s join deadline; no job yet (dispatched {f.age_s:.0f} s ago)"
                )
            case NoJobYet():
                return f"no job for {agent_name_quoted(f.agent)} yet (link 5)"
            case JobRunning():
                extra = f" (replacing {f.replacing} failed job(s))" if f.replacing else ""
                return f"{agent_name_quoted(f.agent)}: job {f.job_id} is {f.status}{extra}"
            case JobEnded():
                return f"{agent_name_quoted(f.agent)}: job {f.job_id} ended without error"
            case JobFailed():
                return f"job {f.job_id} of {agent_name_quoted(f.agent)} {f.status}"
            case AgentPresent():
                return f"{agent_name_quoted(f.agent)}: {f.identity} joined {self.at(f.joined_at)}"
            case AgentGhost():
                return (
                    f"{agent_name_quoted(f.agent)} ({f.identity}) is still listed by LiveKit, but "
                    f"{self.stopped(f.why)}"
                )
            case AgentNotYet():
                if f.late:
                    return f"{agent_name_quoted(f.agent)} is not in the room (no job, link 5)"
                return f"{agent_name_quoted(f.agent)} is not in the room yet (no job yet, link 5)"
            case AgentJobNotJoined():
                return f"job {f.job_id} of {agent_name_quoted(f.agent)} is {f.status}; its agent has not joined yet"
            case AgentLeft():
                return f"{agent_name_quoted(f.agent)} left and was not replaced"
            case GhostListed():
                return f"{f.identity} is a dead agent LiveKit still lists: {self.stopped(f.why)}"
            case PortalRemoved():
                return f"the portal removed {f.removed.identity} ({f.removed.why})"
            case DuplicatesBeingRemoved():
                going = ", ".join(r.identity for r in f.going)
                return f"{f.count} copies of {agent_name_quoted(f.agent)} in the room; the portal is removing {going}"
            case Duplicates():
                return f"{len(f.identities)} copies of {agent_name_quoted(f.agent)} in the room"
            case Unmanaged():
                return f"{len(f.agents)} agent(s) the portal does not manage in the room"
            case CrowdOk():
                if f.agents:
                    return f"{f.agents} agent(s) in the room, one per expected name, none unmanaged"
                return "no agent in the room, so none duplicated or unmanaged"
            case LedgerVerdict():
                return self.ledger_verdict(f)
            case LedgerSaysEnded():
                return (
                    f"{agent_name_quoted(f.agent)}: {f.dispatch.status_label.lower()}, says the ledger "
                    f"({self.where(f.where)})"
                )
            case LastDispatchWas():
                return f"{agent_name_quoted(f.agent)}: last dispatch #{f.dispatch.pk} was {f.dispatch.status_label}"
            case VerdictNoted() | CauseOf() | LiveKitLists():
                return self.detail(f)
        raise AssertionError(f"no words for {f!r}")

    # Causes: why a link is broken -----------------------------------------------------------

    def cause(self, f: Finding) -> str:  # noqa: C901 (one case per finding)
        match f:
            case LiveKitRefused():
                key = f"the API key '{f.api_key}'" if f.api_key else "the portal's API key"
                return f"LiveKit at {f.url} refused {key} or its secret ({f.method} answered {f.status})."
            case LiveKitUnreachable():
                return f"{f.message}."
            case RoomNodeSilent():
                return (
                    "LiveKit lists the room (from the cluster's Redis), but a call that goes to the node "
                    f"hosting it failed ({f.message}). That node is down or cut off: the people and agents "
                    "in this room lost their connection to it."
                )
            case NoSuchAgent():
                close = (
                    f"; configured agents with close names: {agent_names_quoted(f.close)}" if f.close else ""
                )
                return f"The portal has no {self._missing(f.agent)} configured{close}."
            case AgentDisabled():
                rule = f" (rule '{f.rule}' matches {self.on(f.on)})" if f.rule else ""
                text = f"Agent {agent_name_quoted(f.agent)} is disabled in the portal, so no rule dispatches it{rule}."
                w = f.wanted
                if w is not None and w.dispatch is not None:
                    d = w.dispatch
                    text += (
                        f" It was expected here by {self.wanted_by(w)}, from before it was disabled "
                        f"(dispatch #{d.pk}, {d.status_label.lower()})."
                    )
                return text
            case NoRuleForAgent():
                why = [self.detail(r) for r in f.reasons] or [f"no rule names {agent_name_quoted(f.agent)}"]
                return (
                    f"No enabled rule gives {agent_name_quoted(f.agent)} to {self.on(f.on)}: "
                    + "; ".join(why[:3])
                    + "."
                )
            case RuleAgentDisabled():
                return (
                    f"Rule '{f.rule}' matches {self.on(f.on)}, but its agent {agent_name_quoted(f.agent)} is "
                    "disabled, so no agent is dispatched."
                )
            case NoRule():
                return f"No enabled rule matches {self.on(f.on)}, and nothing asked for an agent through the API."
            case ForeignTokens():
                return (
                    f"{f.people} participant(s) are in room '{f.room_name}', but the portal minted no token "
                    f"carrying {agent_names_quoted(f.agents)} for it: they joined with tokens minted elsewhere."
                )
            case TokensWithoutAgent():
                return (
                    f"The portal minted {f.count} token(s) with agents for '{f.room_name}' (first "
                    f"{self.at(f.first_minted)}), but none carried {agent_name_quoted(f.agent)}: the rule was "
                    "probably added or changed after they were minted."
                )
            case TokenIgnored():
                return (
                    f"{self.token_of(f.token.participant_identity).capitalize()} carried {agent_name_quoted(f.agent)} "
                    f"(minted {self.at(f.token.minted_at)}), but room '{f.room_name}' already existed (created "
                    f"{self.at(f.room_created_at)}, before the portal's first token {self.at(f.first_minted)}), so "
                    "LiveKit ignored the token's agents: it applies them only when that join creates the room "
                    "(livekit/livekit#4390)."
                )
            case DispatchTokenIgnored():
                return f"LiveKit has no dispatch for {agent_name_quoted(f.agent)}: the token's agents were ignored (link 3)."
            case NoDispatchTokenRoom():
                return (
                    f"LiveKit has no dispatch for {agent_name_quoted(f.agent)}, although it travels in the token: the "
                    "room was not created by a join with the portal's token."
                    + self._implicit(f.only_implicit)
                )
            case NothingAsked():
                return (
                    f"Nothing asked LiveKit for {agent_name_quoted(f.agent)} in this room: the ledger has no dispatch "
                    "for it. The room_started webhook probably never reached the portal."
                    + self._implicit(f.only_implicit)
                )
            case CeleryDown():
                d = f.dispatch
                beat = (
                    f"its last heartbeat was {self.at(f.heartbeat_at)}"
                    if f.heartbeat_at is not None
                    else "none ever sent a heartbeat"
                )
                error = f"; last error: {d.last_error}" if d.last_error else ""
                return (
                    f"Dispatch #{d.pk} of {agent_name_quoted(f.agent)} is still {d.status_label.lower()} since "
                    f"{self.at(d.created_at)}: the Celery worker that sends it to LiveKit is not running "
                    f"({beat}){error}." + self._implicit(f.only_implicit)
                )
            case DispatchEnded():
                d, agent = f.dispatch, agent_name_quoted(f.agent)
                when = self.at(d.updated_at)
                if d.status == "failed":
                    text = f"The portal's dispatch of {agent} (#{d.pk}, attempt {d.attempt}) failed {when}: {d.last_error}."
                elif d.status == "cancelled":
                    text = f"Dispatch #{d.pk} of {agent} was cancelled {when}."
                else:
                    error = f": {d.last_error}" if d.last_error else ""
                    text = (
                        f"The last dispatch of {agent} (#{d.pk}, attempt {d.attempt}) ended {when} as "
                        f"'{d.status_label.lower()}'{error}, and nothing replaced it."
                    )
                return text + self._implicit(f.only_implicit)
            case DispatchGone():
                d = f.dispatch
                return (
                    f"The ledger's dispatch #{d.pk} of {agent_name_quoted(f.agent)} ({d.livekit_dispatch_id}, "
                    f"{d.status_label.lower()}) is no longer in LiveKit: it was deleted by someone else or the room "
                    "was recreated." + self._implicit(f.only_implicit)
                )
            case NoLkDispatch():
                d = f.dispatch
                return (
                    f"No LiveKit dispatch for {agent_name_quoted(f.agent)} (ledger dispatch #{d.pk}: "
                    f"{d.status_label.lower()})." + self._implicit(f.only_implicit)
                )
            case NoWorker():
                return self.no_worker(f)
            case JobFailed():
                ended = self.at(f.ended_at) if f.ended_at else "(LiveKit does not say when)"
                return (
                    f"Job {f.job_id} of {agent_name_quoted(f.agent)} (dispatch {f.lk_dispatch_id}) {f.status} "
                    f"{ended}: {f.error or 'no error given'}." + self.retry(f.retry)
                )
            case AgentGhost():
                return (
                    f"Agent {agent_name_quoted(f.agent)} ({f.identity}) is dead: {self.stopped(f.why)}. LiveKit keeps "
                    "listing a dead worker's participant until its connection times out (about 20 s) and its job as "
                    "running for good, so they are not taken as signs of life." + self.retry(f.retry)
                )
            case AgentNotYet():
                return f"{agent_name_quoted(f.agent)} is not in the room, and no worker took a job for it (link 5)."
            case AgentLeft():
                left = self.at(f.left_at) if f.left_at else "(the ledger has no time for it)"
                agent = agent_name_quoted(f.agent)
                return (
                    f"Agent {agent} ({f.identity or 'its participant'}) left the room {left} and no other {agent} "
                    "joined since: self-hosted LiveKit never re-dispatches (livekit/agents#1472)."
                )
            case DuplicatesBeingRemoved():
                return (
                    "; ".join(f"{r.identity}: {r.why}" for r in f.going)
                    + ". LiveKit does not deduplicate agents (livekit/agents#944), so the portal removes the extra "
                    "one (RemoveParticipant)."
                )
            case Duplicates():
                return (
                    f"{len(f.identities)} agents named {agent_name_quoted(f.agent)} are in the room "
                    f"({', '.join(f.identities)}), from {len(f.dispatch_ids)} dispatch(es) ({', '.join(f.dispatch_ids)}): "
                    "each CreateDispatch adds another agent and nothing deduplicates them (livekit/agents#944)."
                )
            case Unmanaged():
                answering = (
                    f" and may be answering in place of {agent_names_quoted(f.expected)}"
                    if f.expected
                    else ""
                )
                return (
                    "; ".join(self.unmanaged(a) for a in f.agents)
                    + f". The portal did not ask for them{answering}."
                )
            case LedgerVerdict():
                text = f"The portal's own verdict, which outranks what LiveKit still lists: {self.ledger_verdict(f)}."
                return f"{text} {self.cause(f.underlying)}" if f.underlying is not None else text
            case LedgerSaysEnded():
                d = f.dispatch
                return (
                    f"The last dispatch of {agent_name_quoted(f.agent)} (#{d.pk}, attempt {d.attempt}) ended "
                    f"{self.at(d.ended_at)} as '{d.status_label.lower()}': {d.last_error or 'no detail recorded'}."
                )
        return self.summary(f)

    # Fixes: the likeliest first ------------------------------------------------------------

    def fix(self, f: Finding) -> str:  # noqa: C901 (one case per finding)
        match f:
            case LiveKitRefused():
                return (
                    "Set LIVEKIT_API_KEY and LIVEKIT_API_SECRET to a key pair of this server (the `keys:` of "
                    "livekit.yaml, or the project's API keys in LiveKit Cloud), then restart the portal."
                )
            case RoomNodeSilent():
                return (
                    "Restart or replace the LiveKit node. About 5 s after the node's last heartbeat, a join "
                    "(a person's SDK reconnecting) or a CreateDispatch moves the room to a live node, which "
                    "keeps its sid; the portal's reconcile then re-dispatches agents that did not come back. "
                    "Set `api.enable_psrpc_for_get_list_participants: true` on every node, or LiveKit keeps "
                    "listing a dead node's participants in the moved room."
                )
            case LiveKitUnreachable():
                return (
                    f"Check that LiveKit runs and that LIVEKIT_URL ({f.url}) is its API address as seen from this "
                    "machine (http(s)://host:7880 for self-hosted, https://<project>.livekit.cloud for Cloud)."
                )
            case NoSuchAgent():
                return (
                    "Add the agent in Admin › Agents with exactly the name its worker registers "
                    "(WorkerOptions(agent_name=...)), then a rule giving it this room."
                )
            case AgentDisabled():
                return f"Enable {agent_name_quoted(f.agent)} in Admin › Agents if it is still wanted in this room."
            case NoRuleForAgent():
                return (
                    f"Add or change a rule for {agent_name_quoted(f.agent)} whose room match covers "
                    f"'{f.on.room_name}'. {_EXPLAIN}"
                )
            case RuleAgentDisabled():
                return f"Enable {agent_name_quoted(f.agent)} in Admin › Agents, or point the rule at an enabled agent."
            case NoRule():
                return f"Add a dispatch rule whose room match covers '{f.on.room_name}'. {_EXPLAIN}"
            case ForeignTokens():
                return (
                    "Have the frontend fetch its token from POST /api/v1/token, or set the rule's delivery to "
                    "'explicit' so the portal dispatches the agent whoever minted the token."
                )
            case TokensWithoutAgent():
                return "Have the participant fetch a new token (rejoin), or dispatch the agent from Admin › Dispatches."
            case TokenIgnored():
                return (
                    "Dispatch the agent now (Admin › Dispatches, or POST /api/v1/dispatches), and give rooms that "
                    "other apps create an 'explicit' delivery rule; the portal switches to explicit dispatch by "
                    "itself when it knows the room exists."
                )
            case DispatchTokenIgnored():
                return "See link 3."
            case NoDispatchTokenRoom():
                return "Dispatch it from Admin › Dispatches; use 'explicit' delivery for rooms others create."
            case NothingAsked():
                return (
                    "Point LiveKit's webhook at https://<portal>/livekit/webhook signed with the same API key, and "
                    "run `manage.py reconcile` to apply the explicit rules now."
                )
            case CeleryDown() | NoLkDispatch():
                return _WORKER_FIX
            case DispatchEnded():
                if f.dispatch.status == "failed":
                    return "Fix what LiveKit refused, then re-dispatch from Admin › Dispatches."
                if f.dispatch.status == "cancelled":
                    return "Re-dispatch it if it is still wanted."
                return "Re-dispatch from Admin › Dispatches, or run `manage.py reconcile`."
            case DispatchGone():
                return "Re-dispatch from Admin › Dispatches, or run `manage.py reconcile`."
            case NoWorker():
                return self.fix_kind(f.fix, f.agent, f.url, near=[n for n, _ in f.seen_near])
            case JobFailed():
                return self.fix_kind(FixKind.WORKER_LOG, f.agent, "")
            case AgentGhost():
                return self.fix_kind(FixKind.RESTART_WORKER, f.agent, "")
            case AgentNotYet() | AgentLeft():
                return self.fix_kind(FixKind.AGENT_LEFT, f.agent, "")
            case DuplicatesBeingRemoved():
                return (
                    "Nothing to do if it is gone within seconds. If it stays, read the dispatch's timeline "
                    "(Admin › Dispatches) for LiveKit's answer to the removal, and check the Celery worker."
                )
            case Duplicates():
                return (
                    "Cancel the extra dispatch (Admin › Dispatches › cancel), and let only one path deliver "
                    f"{agent_name_quoted(f.agent)}: the portal, not also the frontend's own token or API calls."
                )
            case Unmanaged():
                fixes = []
                if any(a.kind == "unnamed" for a in f.agents):
                    fixes.append(
                        "Give the unnamed worker an agent_name (WorkerOptions(agent_name=...)) so it only joins "
                        "when named, or stop it."
                    )
                if any(a.kind != "unnamed" for a in f.agents):
                    fixes.append(
                        "Find who dispatches the other agents (their dispatch ids are above) and stop it there."
                    )
                return " ".join(fixes)
            case LedgerVerdict():
                if f.underlying is not None:
                    return self.fix(f.underlying)
                return self.fix_kind(f.fix, f.failed.agent_name, f.url, near=list(f.near))
            case LedgerSaysEnded():
                key = {"no_worker": FixKind.START_WORKER, "failed": FixKind.WORKER_LOG}.get(
                    f.dispatch.status, FixKind.AGENT_LEFT
                )
                return self.fix_kind(key, f.agent, f.url)
        return ""

    def fix_kind(self, kind: FixKind, agent: str, url: str, *, near: list[str] | None = None) -> str:
        start = (
            f"start a worker with WorkerOptions(agent_name='{agent}') against LIVEKIT_URL={url} with this "
            "project's API key"
            if url
            else f"start a worker with WorkerOptions(agent_name='{agent}') with this project's API key"
        )
        redispatch = (
            "then re-dispatch: LiveKit never hands an earlier dispatch to a worker that registers later."
        )
        if kind == FixKind.RENAME_PORTAL_AGENT and near:
            return (
                f"Rename the portal's agent to '{near[0]}', the name its workers register with (Admin › Agents), "
                f"{redispatch} If '{agent}' is the name you meant, {start} instead."
            )
        if kind in (FixKind.START_WORKER, FixKind.RENAME_PORTAL_AGENT):
            return (
                f"{start[0].upper()}{start[1:]} (fix the name on whichever side has the typo), {redispatch}"
            )
        if kind == FixKind.UNNAMED_WORKER:
            return (
                "Register the worker without agent_name, or give the rule the agent name the worker uses. "
                f"LIVEKIT_URL must be {url}."
            )
        if kind == FixKind.WORKER_LOG:
            return (
                "Read the worker's log for this job; self-hosted LiveKit never re-dispatches, so re-dispatch from "
                "Admin › Dispatches (the portal's reconcile does it too while the room is active)."
            )
        if kind == FixKind.RESTART_WORKER:
            return (
                "The portal re-dispatches once a second poll confirms the silence (and removes the dead "
                "participant); restart the worker, and give every worker of the agent a health URL "
                "(Admin › Worker health URLs) so the portal can tell which worker held which agent."
            )
        return (
            "Re-dispatch from Admin › Dispatches (reconcile does it while the room is active), and check the "
            "worker's log for why the agent left."
        )

    # Pieces ---------------------------------------------------------------------------------

    def wanted_by(self, w: Wanted) -> str:
        if w.by == "rule":
            return f"rule '{w.rule}'{_for(w.identity)}"
        if w.by == "dispatch" and w.dispatch is not None:
            return f"{w.dispatch.source_label.lower()} dispatch #{w.dispatch.pk}"
        return f"{self.token_of(w.identity)} (rule '{w.rule}')"

    def token_of(self, identity: str) -> str:
        return f"the token{_for(identity)}" if identity else "a token (no identity recorded)"

    def minted(self, identity: str, minted_at: datetime) -> str:
        return f"{self.token_of(identity)} ({self.at(minted_at)})"

    def on(self, on: Evaluated) -> str:
        evaluated = ", ".join(f"'{i}'" for i in on.identities)
        return f"room '{on.room_name}'" + (f" and identity {evaluated}" if evaluated else "")

    def where(self, f: RoomNotLive) -> str:
        if f.status == Room.Status.FINISHED:
            ended = f" {self.at(f.finished_at)}" if f.finished_at else ""
            return f"room '{f.room_name}' finished{ended}"
        if f.status == Room.Status.ACTIVE:
            return f"room '{f.room_name}' is gone from LiveKit (reconcile will close it in the ledger)"
        return f"room '{f.room_name}' is not live in LiveKit: nobody has joined yet"

    def converted(self, f: TokenConverted) -> str:
        """The words must agree with the room's record: only a room the record says existed
        before the first token is said to have existed before."""
        carried = f"{agent_name_quoted(f.agent)}: carried in {self.minted(f.token.participant_identity, f.token.minted_at)}"
        if f.existed_before_token:
            why = "LiveKit ignored it (the room existed before the portal's first token)"
        elif f.room_created_at is not None and f.room_created_at > f.token.minted_at:
            why = (
                f"LiveKit ignored it (room '{f.room_name}' was created {self.at(f.room_created_at)} by another join "
                "or dispatch, after the token was minted and before its holder joined)"
            )
        else:
            why = "LiveKit showed no dispatch from the token by its join deadline"
        return f"{carried}; {why}, so the portal dispatched it explicitly"

    def stopped(self, why: WorkerStopped) -> str:
        if why.silence is not None:
            return why.silence.described(self.now, with_error=self.staff)
        return f"{WORKER_STOPPED} (recorded {self.at(why.recorded_at)})"

    def retry(self, r: Retry) -> str:
        if r.state == "retrying":
            return f" The portal is re-dispatching: attempt {r.attempt} (#{r.pk}) is {r.status}."
        if r.state == "gave_up":
            return f" The portal gave up after {r.attempt} attempt(s)."
        return ""

    def ledger_verdict(self, f: LedgerVerdict) -> str:
        d = f.failed
        agent = agent_name_quoted(d.agent_name)
        if d.status == "no_worker":
            head = f"attempt {d.attempt} of {agent} found no worker ({d.last_error})"
        elif d.status == "timed_out":
            head = f"attempt {d.attempt} of {agent} timed out: {d.last_error}"
        elif f.why is not None:
            head = f"attempt {d.attempt} of {agent} failed: {self.stopped(f.why)}"
        else:
            head = f"attempt {d.attempt} of {agent} failed: {d.last_error or 'no detail recorded'}"
        last = f.last
        if f.tail == "retrying":
            of = f" of {f.max_attempts}" if f.max_attempts is not None else ""
            tail = f"retrying: attempt {last.attempt}{of} ({last.status.replace('_', ' ')})"
        elif f.tail == "fell_back":
            tail = f"the portal fell back to {agent_name_quoted(last.agent_name)} ({last.status.replace('_', ' ')})"
        else:
            tail = f"the portal gave up after {d.attempt} attempt(s)"
        tail += "".join(f"; incident '{i.key}' opened {self.at(i.opened_at)}" for i in f.incidents)
        return f"{head}; {tail}"

    def no_worker(self, f: NoWorker) -> str:
        what = f"dispatch {f.lk_dispatch_id}" if f.lk_dispatch_id else self._ledger_dispatch(f)
        parts = [
            f"LiveKit took {what} for {agent_name_quoted(f.agent)} {self.at(f.created_at)}, but no job came: no worker "
        ]
        if f.agent == "":
            named = (
                f". Named agents seen joining recently: {agent_names_quoted(f.named_seen)}"
                if f.named_seen
                else ""
            )
            parts.append(
                "registered without an agent name is connected. An empty agent name only reaches unnamed "
                "workers (those are sent to every new room automatically); a worker registered with a name "
                f"never gets it{named}."
            )
            return "".join(parts)
        parts.append(f"is registered as exactly '{f.agent}' on LiveKit at {f.url}.")
        if f.seen_near:
            where = ", ".join(f"'{n}' (room '{room}')" for n, room in f.seen_near)
            parts.append(
                f" Workers seen recently: {where} (a typo? in the worker's or the portal's agent name)."
            )
        if f.configured_near:
            parts.append(f" Configured agents with close names: {agent_names_quoted(f.configured_near)}.")
        if f.health:
            parts.append(f" Worker health: {f.health}.")
        if f.unnamed_seen_in is not None:
            parts.append(
                f" An unnamed worker is connected (seen in room '{f.unnamed_seen_in}'): unnamed workers get "
                "automatic dispatch to every new room but never a named dispatch, so it cannot answer for "
                f"'{f.agent}'."
            )
        parts.append(
            " Otherwise the worker is down, not yet up, or registered on another LiveKit server or project "
            "(its LIVEKIT_URL or API key differ from the portal's)."
        )
        if f.retry.state == "retrying":
            parts.append(
                f" The portal is trying again: attempt {f.retry.attempt} (#{f.retry.pk}) is {f.retry.status}."
            )
        elif f.retry.state == "gave_up":
            parts.append(f" The portal gave up after {f.retry.attempt} attempt(s).")
        return "".join(parts)

    def unmanaged(self, a: UnmanagedAgent) -> str:
        via = f" via {a.via}" if a.via else ""
        if a.kind == "unnamed":
            return (
                f"{a.identity} is an unnamed worker's agent{via}: a worker registered without agent_name joins "
                "every new room automatically"
            )
        if a.kind == "unknown":
            return f"{a.identity} is '{a.agent_name}'{via}, an agent the portal does not know (another product's?)"
        return f"{a.identity} is '{a.agent_name}'{via}, configured in the portal but not wanted in this room"

    @staticmethod
    def _ledger_dispatch(f: NoWorker) -> str:
        d = f.dispatch
        return f"dispatch #{d.pk} (attempt {d.attempt})" if d is not None else "the dispatch"

    @staticmethod
    def _missing(agent: str) -> str:
        return f"agent named exactly '{agent}'" if agent else "unnamed agent"

    @staticmethod
    def _implicit(only_implicit: bool) -> str:
        return " Only LiveKit's implicit dispatch for unnamed workers is there." if only_implicit else ""


# --- the terminal ---------------------------------------------------------------------------


def diagnosis_format(diagnosis: Diagnosis) -> str:
    """The doctor's answer for a terminal."""
    marks = {OK: "ok", BROKEN: "BROKEN", UNKNOWN: "unknown"}
    title = f"Doctor for room '{diagnosis.room_name}'"
    if diagnosis.agent is not None:
        title += f", agent {agent_name_quoted(diagnosis.agent)}"
    if diagnosis.identity:
        title += f", identity '{diagnosis.identity}'"
    lines = [title, f"LiveKit: {diagnosis.livekit_url}", ""]
    first = diagnosis.first_broken
    for link in diagnosis.links:
        lines.append(f"{link.number}. [{marks[link.state]:>7}] {link.title}")
        if link.summary:
            lines.append(f"             {link.summary}")
        for detail in link.details:
            lines.append(f"             - {detail}")
        if link is first:
            lines.append(f"             cause: {link.cause}")
            lines.append(f"             fix:   {link.fix}")
    lines += ["", f"Verdict: {diagnosis.summary}"]
    return "\n".join(lines)
