"""The rule engine: priority, stop, shadowing, match kinds, templates and the index."""

import json
import random

import pytest

from agents_app.rules import (
    Join,
    MetadataTooLarge,
    RuleError,
    RuleSet,
    RuleSpec,
    matcher_compile,
    metadata_render,
    rule_compile,
)


def ruleset(*specs: RuleSpec) -> RuleSet:
    return RuleSet([rule_compile(s) for s in specs])


def spec(name, agent, kind="glob", value="*", **kw) -> RuleSpec:
    return RuleSpec(name=name, agent_name=agent, room_kind=kind, room_value=value, **kw)


def agents_for(rs: RuleSet, room: str, **join) -> list[tuple[str, str]]:
    return [(a.agent_name, a.rule) for a in rs.evaluate(Join(room, **join)).agents]


@pytest.mark.parametrize(
    "kind,value,matches,misses",
    [
        ("exact", "lobby", ["lobby"], ["lobby-1", "Lobby", "xlobby"]),
        ("prefix", "support-", ["support-", "support-42"], ["support", "my-support-1"]),
        (
            "glob",
            "interview-*-en",
            ["interview-1-en", "interview--en"],
            ["interview-1-de", "interview-1-en-x"],
        ),
        ("glob", "room-?", ["room-a"], ["room-ab", "room-"]),
        ("regex", r"call-\d{3}", ["call-123"], ["call-12", "call-1234", "xcall-123"]),
    ],
)
def test_each_match_kind(kind, value, matches, misses):
    rs = ruleset(spec("r", "a", kind, value))
    for room in matches:
        assert agents_for(rs, room) == [("a", "r")], room
    for room in misses:
        assert agents_for(rs, room) == [], room


def test_lower_priority_number_runs_first_and_wins_the_agent():
    rs = ruleset(
        spec("late", "helper", "glob", "*", priority=50, metadata_template={"from": "late"}),
        spec("early", "helper", "prefix", "sales-", priority=10, metadata_template={"from": "early"}),
    )
    result = rs.evaluate(Join("sales-1"), explain=True)
    assert [(a.agent_name, a.rule, json.loads(a.metadata)) for a in result.agents] == [
        ("helper", "early", {"from": "early"})
    ]
    outcomes = {v.rule: (v.outcome, v.reason) for v in result.verdicts}
    assert outcomes["late"] == ("shadowed", "agent already applied by rule 'early'")


def test_each_matching_rule_adds_its_agent_in_priority_order():
    rs = ruleset(
        spec("b", "notes", priority=20), spec("a", "voice", priority=10), spec("c", "x", "exact", "other")
    )
    assert agents_for(rs, "room") == [("voice", "a"), ("notes", "b")]


def test_stop_ends_evaluation_and_explain_says_so():
    rs = ruleset(
        spec("vip", "concierge", "prefix", "vip-", priority=1, stop=True),
        spec("everyone", "receptionist", priority=2),
    )
    assert agents_for(rs, "vip-7") == [("concierge", "vip")]
    assert agents_for(rs, "lobby") == [("receptionist", "everyone")]
    verdicts = {v.rule: v for v in rs.evaluate(Join("vip-7"), explain=True).verdicts}
    assert verdicts["everyone"].outcome == "not_evaluated"
    assert "vip" in verdicts["everyone"].reason


def test_disabled_rules_and_disabled_agents_never_dispatch():
    rs = ruleset(
        spec("off", "a", enabled=False),
        spec("agent-off", "b", agent_enabled=False, stop=True, priority=5),
        spec("after", "c", priority=10),
    )
    result = rs.evaluate(Join("any"), explain=True)
    assert result.agents == []  # the disabled agent's rule still matched, and its stop applies
    assert {v.rule: v.outcome for v in result.verdicts} == {
        "agent-off": "agent_disabled",
        "after": "not_evaluated",
        "off": "disabled",
    }


def test_identity_and_attribute_conditions():
    rs = ruleset(
        spec(
            "gold",
            "vip-agent",
            identity_kind="glob",
            identity_value="customer-*",
            attributes={"tier": {"kind": "exact", "value": "gold"}},
        )
    )
    assert agents_for(rs, "r", participant_identity="customer-1", attributes={"tier": "gold"}) == [
        ("vip-agent", "gold")
    ]
    reasons = [
        rs.evaluate(Join("r", participant_identity=i, attributes=a), explain=True).verdicts[0].reason
        for i, a in [("staff-1", {"tier": "gold"}), ("customer-1", {}), ("customer-1", {"tier": "silver"})]
    ]
    assert reasons == [
        "identity 'staff-1' does not match glob 'customer-*'",
        "attribute 'tier' is missing",
        "attribute tier='silver' does not match exact 'gold'",
    ]


def test_template_renders_placeholders_and_named_groups_over_default():
    rs = ruleset(
        spec(
            "interviews",
            "interviewer",
            "regex",
            r"interview-(?P<candidate>\d+)-(?P<lang>[a-z]{2})",
            default_metadata={"lang": "xx", "voice": "calm"},
            metadata_template={
                "lang": "{{match.lang}}",
                "candidate": "{{ match.candidate }}",
                "room": "{{room_name}}",
                "who": "{{participant_identity}}/{{participant_name}}",
                "tier": "{{attributes.tier}}",
                "via": "{{client}}",
                "list": ["{{match.candidate}}", 3],
            },
        )
    )
    join = Join("interview-42-de", "cand", "Ann", {"tier": "gold"}, "web")
    metadata = json.loads(rs.evaluate(join).agents[0].metadata)
    assert metadata == {
        "lang": "de",
        "voice": "calm",
        "candidate": "42",
        "room": "interview-42-de",
        "who": "cand/Ann",
        "tier": "gold",
        "via": "web",
        "list": ["42", 3],
    }


def test_no_template_uses_the_agents_default_metadata():
    rs = ruleset(spec("r", "a", default_metadata={"k": "v"}))
    assert rs.evaluate(Join("x")).agents[0].metadata == '{"k":"v"}'


@pytest.mark.parametrize(
    "template,message",
    [
        ({"x": "{{nope}}"}, "unknown placeholder {{nope}}"),
        ({"x": "{{match.id}}"}, "unknown placeholder {{match.id}}"),
        ({"{{attributes}}": 1}, "unknown placeholder {{attributes}}"),
    ],
)
def test_unknown_placeholders_are_rejected(template, message):
    with pytest.raises(RuleError) as err:
        rule_compile(spec("r", "a", "glob", "x-*", metadata_template=template))
    assert err.value.field == "metadata_template"
    assert message in err.value.message


def test_rendered_metadata_over_64_kib_is_refused():
    with pytest.raises(MetadataTooLarge):
        metadata_render(
            default={}, template={"a": "{{attributes.big}}"}, context={"attributes": {"big": "x" * 70_000}}
        )


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("(a+)+$", "catastrophically"),
        ("(x|xx)*", "catastrophically"),
        (r"(\w)\1", "back-references"),
        ("a" * 300, "longer than 256"),
        ("(unclosed", "does not compile"),
    ],
)
def test_dangerous_or_broken_regexes_are_rejected(value, fragment):
    with pytest.raises(RuleError) as err:
        rule_compile(spec("r", "a", "regex", value))
    assert err.value.field == "room_match_value"
    assert fragment in err.value.message


def test_unreachable_rules_are_flagged():
    rs = ruleset(
        spec("catch-all", "a", "glob", "*", priority=1, stop=True),
        spec("narrow", "b", "prefix", "support-", priority=5),
        spec("sel", "c", "exact", "x", priority=0),
    )
    assert rs.unreachable() == {"narrow": "catch-all"}
    rs2 = ruleset(
        spec("support-stop", "a", "glob", "support-*", priority=1, stop=True),
        spec("support-en", "b", "prefix", "support-en-", priority=5),
        spec("sales", "c", "prefix", "sales-", priority=5),
        spec(
            "conditional", "d", "glob", "*", priority=0, stop=True, identity_kind="exact", identity_value="x"
        ),
    )
    assert rs2.unreachable() == {"support-en": "support-stop"}


def test_index_returns_exactly_what_a_full_scan_would():
    rng = random.Random(7)
    specs = []
    for i in range(400):
        kind = rng.choice(["exact", "prefix", "glob", "glob", "regex"])
        stem = rng.choice(["team", "support", "sales", "t"]) + f"-{rng.randint(0, 20)}"
        value = {
            "exact": stem,
            "prefix": stem,
            "glob": rng.choice([f"{stem}-*", f"*-{stem}", f"{stem}?", "*"]),
            "regex": rng.choice([rf"{stem}-(?P<n>\d+)", r".*-9", rf"(?:{stem})-x"]),
        }[kind]
        specs.append(
            spec(
                f"r{i}", f"agent-{i % 50}", kind, value, priority=rng.randint(0, 30), stop=rng.random() < 0.05
            )
        )
    rs = ruleset(*specs)
    for _ in range(300):
        room = (
            rng.choice(["team", "support", "sales", "t", "x"])
            + f"-{rng.randint(0, 20)}"
            + rng.choice(["", "-1", "-x", "-9", "?"])
        )
        fast = rs.evaluate(Join(room)).agents
        full = rs.evaluate(Join(room), explain=True).agents
        assert fast == full, room


def test_matcher_errors_name_the_field():
    with pytest.raises(RuleError) as err:
        matcher_compile("fuzzy", "x")
    assert err.value.field == "kind"
    with pytest.raises(RuleError) as err:
        rule_compile(spec("r", "a", attributes={"tier": {"kind": "exact"}}))
    assert err.value.field == "attribute_conditions"
