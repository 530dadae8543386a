"""The doctor's verdicts as pure functions of a snapshot built by hand: no database, no
LiveKit. Each test states the facts, then the verdict (the structured cause) and, where it
matters to a reader, the words made from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents_app.rules import AppliedAgent, Join, Verdict
from agents_app.services import Explanation
from livekit_boundary.client import KIND_AGENT, LiveKitAuthRejected, LkDispatch, LkJob, LkParticipant, LkRoom
from operator_views.doctor.facts import (
    AgentConfig,
    CarriedAgent,
    DispatchRecord,
    LiveKitFacts,
    RoomRecord,
    RulesRead,
    Snapshot,
    TokenRecord,
)
from operator_views.doctor.verdicts import (
    BROKEN,
    OK,
    UNKNOWN,
    AgentDisabled,
    AgentGhost,
    CauseOf,
    FixKind,
    ForeignTokens,
    GhostListed,
    LedgerVerdict,
    NotChecked,
    NoWorker,
    TokenConverted,
    walk,
)
from operator_views.doctor.wording import diagnosis_worded
from watch_app.selectors import WorkerSilence

NOW = datetime(2026, 12, 3, 9, 0, 0, tzinfo=UTC)
URL = "http://livekit.test:7880"


def _ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def _rules(
    room: str, *agents: tuple[str, str], identity: str = "ann", disabled: tuple[str, ...] = ()
) -> RulesRead:
    """The rules evaluated for `identity`: each (agent, delivery) applied by rule 'r-<agent>';
    each disabled agent's rule matched but its agent is disabled."""
    applied = tuple(AppliedAgent(name, f"r-{name}", "", delivery) for name, delivery in agents)
    verdicts = tuple(Verdict(f"r-{name}", name, "applied", "matched") for name, _ in agents) + tuple(
        Verdict(f"r-{name}", name, "agent_disabled", "agent disabled") for name in disabled
    )
    return RulesRead(Join(room, identity), Explanation(room, identity, verdicts, applied, {}, {}))


def _person(identity: str = "ann") -> LkParticipant:
    return LkParticipant(identity, "PA_" + identity, 0, {}, _ago(30))


def _agent(agent_name: str, identity: str) -> LkParticipant:
    return LkParticipant(identity, "PA_" + identity, KIND_AGENT, {"lk.agent_name": agent_name}, _ago(20))


def _snapshot(name: str = "demo-1", **fields) -> Snapshot:
    base = {
        "lk": LiveKitFacts(room=LkRoom(name, "RM_1", 1, _ago(40)), participants=(_person(),)),
        "livekit_url": URL,
        "room": RoomRecord("active", _ago(40)),
    }
    return Snapshot(room_name=name, now=NOW, **{**base, **fields})


def _words(snap: Snapshot, agent_name: str | None = None):
    return diagnosis_worded(
        walk(snap, agent_name=agent_name),
        room_name=snap.room_name,
        agent=agent_name,
        identity=None,
        now=snap.now,
        livekit_url=snap.livekit_url,
        staff=snap.staff,
    )


def test_a_portal_side_typo_is_a_no_worker_cause_whose_first_fix_renames_the_portals_agent():
    snap = _snapshot(
        agents={"demo-agnet": AgentConfig("demo-agnet")},
        rules=(_rules("demo-1", ("demo-agnet", "explicit")),),
        lk=LiveKitFacts(
            room=LkRoom("demo-1", "RM_1", 1, _ago(40)),
            participants=(_person(),),
            dispatches=(LkDispatch("AD_1", "demo-1", "demo-agnet", "", _ago(30)),),
        ),
        names_seen={"demo-agent": "other-app-1"},
    )
    result = walk(snap)
    job = result.link("job")
    assert job.state == BROKEN
    cause = job.cause
    assert isinstance(cause, NoWorker)
    assert cause.agent == "demo-agnet" and cause.lk_dispatch_id == "AD_1"
    assert cause.seen_near == (("demo-agent", "other-app-1"),)
    assert cause.fix == FixKind.RENAME_PORTAL_AGENT

    fix = _words(snap).first_broken.fix
    assert fix.startswith("Rename the portal's agent to 'demo-agent'")
    assert fix.index("'demo-agent'") < fix.index("WorkerOptions(agent_name='demo-agnet')")


def test_a_near_name_the_portal_also_configures_is_no_rename():
    """Renaming would clash with the configured 'demo-agent': start the worker instead."""
    snap = _snapshot(
        agents={"demo-agnet": AgentConfig("demo-agnet"), "demo-agent": AgentConfig("demo-agent")},
        rules=(_rules("demo-1", ("demo-agnet", "explicit")),),
        lk=LiveKitFacts(
            room=LkRoom("demo-1", "RM_1", 1, _ago(40)),
            participants=(_person(),),
            dispatches=(LkDispatch("AD_1", "demo-1", "demo-agnet", "", _ago(30)),),
        ),
        names_seen={"demo-agent": "other-app-1"},
    )
    cause = walk(snap).link("job").cause
    assert isinstance(cause, NoWorker) and cause.fix == FixKind.START_WORKER
    assert _words(snap).first_broken.fix.startswith(
        "Start a worker with WorkerOptions(agent_name='demo-agnet')"
    )


def test_an_agent_expected_by_an_earlier_token_but_disabled_since_breaks_link_2():
    row = DispatchRecord(
        1,
        "support-agent",
        "pending",
        _ago(20),
        source="token",
        delivery="token",
        rule_name="r",
        trigger="ann",
    )
    snap = _snapshot(
        name="support-1",
        agents={"support-agent": AgentConfig("support-agent", enabled=False)},
        rules=(_rules("support-1", disabled=("support-agent",)),),
        ledger=(row,),
    )
    rules = walk(snap).link("rules")
    assert rules.state == BROKEN
    cause = rules.cause
    assert isinstance(cause, AgentDisabled)
    assert cause.rule == "r-support-agent" and cause.wanted is not None and cause.wanted.dispatch == row
    link = _words(snap).links[1]
    assert link.summary == "agent 'support-agent' is disabled in the portal"


def test_a_converted_token_is_told_as_the_record_says():
    """The room record says it did not exist at the first token, and LiveKit created it after
    the token was minted: "ignored" because another join created it, not "existed before"."""
    token = TokenRecord(_ago(60), "ann", (CarriedAgent("support-agent", "token"),))
    row = DispatchRecord(
        1, "support-agent", "requested", _ago(60), source="token", delivery="explicit", trigger="ann"
    )
    snap = _snapshot(
        name="support-3",
        lk=LiveKitFacts(
            room=LkRoom("support-3", "RM_1", 2, _ago(40)), participants=(_person(), _person("bob"))
        ),
        room=RoomRecord("active", _ago(40), existed_before_token=False),
        agents={"support-agent": AgentConfig("support-agent")},
        rules=(_rules("support-3", ("support-agent", "token")),),
        tokens=(token,),
        ledger=(row,),
    )
    token_link = walk(snap).link("token")
    assert token_link.state == OK
    [found] = token_link.found
    assert isinstance(found, TokenConverted)
    assert found.existed_before_token is False and found.room_created_at == _ago(40)
    summary = _words(snap).links[2].summary
    assert "existed before" not in summary
    assert "'support-3' was created at 08:59:20 UTC (40 s ago) by another join or dispatch" in summary

    existed = _snapshot(
        **{**_fields(snap), "room": RoomRecord("active", _ago(40), existed_before_token=True)}
    )
    assert "(the room existed before the portal's first token)" in _words(existed).links[2].summary


def _fields(snap: Snapshot) -> dict:
    return {"name": snap.room_name} | {
        f: getattr(snap, f) for f in snap.__dataclass_fields__ if f not in ("room_name", "now")
    }


def test_a_ghost_is_not_present_and_its_worker_silence_is_the_cause():
    row = DispatchRecord(
        1,
        "support-agent",
        "agent_joined",
        _ago(60),
        source="rule",
        participant_identity="agent-AJ_1",
        joined_at=_ago(50),
    )
    silence = WorkerSilence("support-agent", "http://10.0.0.7:8081", _ago(25), 1, "refused", holds=True)
    snap = _snapshot(
        name="support-4",
        lk=LiveKitFacts(
            room=LkRoom("support-4", "RM_1", 2, _ago(60)),
            participants=(_person(), _agent("support-agent", "agent-AJ_1")),
            dispatches=(
                LkDispatch(
                    "AD_1",
                    "support-4",
                    "support-agent",
                    "",
                    _ago(60),
                    (LkJob("AJ_1", "running", "", "agent-AJ_1"),),
                ),
            ),
        ),
        agents={"support-agent": AgentConfig("support-agent")},
        rules=(_rules("support-4", ("support-agent", "explicit")),),
        ledger=(row,),
        silences={1: silence},
    )
    result = walk(snap)
    agent = result.link("agent")
    assert agent.state == BROKEN and isinstance(agent.cause, AgentGhost)
    assert agent.cause.why.silence == silence
    assert any(isinstance(d, GhostListed) for d in result.link("crowd").details)
    worded = _words(snap)
    assert "the agent's worker stopped answering 25 s ago (refused)" in worded.first_broken.cause
    client = _words(_snapshot(**{**_fields(snap), "staff": False}))
    assert "refused" not in client.first_broken.cause  # the poll's error names an internal address


def test_the_ledgers_no_worker_verdict_outranks_what_livekit_lists():
    row = DispatchRecord(
        1,
        "support-agent",
        "no_worker",
        _ago(60),
        source="rule",
        livekit_dispatch_id="AD_1",
        last_error="no worker took the job within 15 s",
        requested_at=_ago(59),
    )
    snap = _snapshot(
        name="support-5",
        agents={"support-agent": AgentConfig("support-agent", max_attempts=1)},
        rules=(_rules("support-5", ("support-agent", "explicit")),),
        ledger=(row,),
        names_seen={},
    )
    result = walk(snap)
    assert result.link("dispatch").state == UNKNOWN  # the portal deleted the dispatch no worker took
    job = result.link("job")
    assert job.state == BROKEN
    verdict = job.cause
    assert isinstance(verdict, LedgerVerdict) and verdict.tail == "gave_up" and verdict.failed == row
    assert isinstance(verdict.underlying, NoWorker)
    worded = _words(snap).first_broken
    assert worded.summary.startswith("attempt 1 of 'support-agent' found no worker")
    assert worded.summary.endswith("the portal gave up after 1 attempt(s)")
    assert "no worker registered as 'support-agent' took the dispatch of 'support-agent'" in worded.details


def test_an_agent_present_makes_a_foreign_token_informational():
    snap = _snapshot(
        name="support-6",
        lk=LiveKitFacts(
            room=LkRoom("support-6", "RM_1", 2, _ago(60)),
            participants=(_person(), _agent("support-agent", "agent-AJ_1")),
            dispatches=(
                LkDispatch(
                    "AD_1",
                    "support-6",
                    "support-agent",
                    "",
                    _ago(60),
                    (LkJob("AJ_1", "running", "", "agent-AJ_1"),),
                ),
            ),
        ),
        agents={"support-agent": AgentConfig("support-agent")},
        rules=(_rules("support-6", ("support-agent", "token")),),
    )
    result = walk(snap)
    token = result.link("token")
    assert token.state == OK and token.informational
    assert isinstance(token.found[0], ForeignTokens)
    assert isinstance(token.details[0], CauseOf)
    worded = _words(snap)
    assert worded.status == "healthy"
    assert worded.links[2].summary.startswith("informational (the agent is present and running)")


def test_livekit_refusing_the_key_leaves_every_later_link_unknown():
    snap = _snapshot(
        lk=LiveKitFacts(
            error=LiveKitAuthRejected("unauthorized", method="ListRooms", status=401),
            error_message="unauthorized",
        ),
        api_key="APIkey",
        agents={"support-agent": AgentConfig("support-agent")},
        rules=(_rules("demo-1", ("support-agent", "explicit")),),
    )
    result = walk(snap)
    assert result.link("livekit").state == BROKEN
    assert all(link.found == (NotChecked("livekit"),) for link in result.links[3:]), (
        "nothing after link 1 is guessed"
    )
    worded = _words(snap)
    assert worded.status == "livekit_unavailable" and worded.exit_code == 2
    assert "refused the API key 'APIkey'" in worded.first_broken.cause
    client = _words(_snapshot(**{**_fields(snap), "staff": False, "api_key": ""}))
    assert "refused the portal's API key" in client.first_broken.cause
