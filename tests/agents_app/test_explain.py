"""POST /api/v1/rules/explain and the admin explain page: why does a room get an agent?"""

import pytest

from tests.factories import AgentFactory, RuleFactory, make_client

pytestmark = pytest.mark.django_db
URL = "/api/v1/rules/explain"


@pytest.fixture
def rules():
    vip = AgentFactory(agent_name="concierge")
    RuleFactory(
        name="vip first", agent=vip, room_match_kind="prefix", room_match_value="vip-", priority=1, stop=True
    )
    RuleFactory(
        name="support", agent=AgentFactory(agent_name="helper"), room_match_value="support-*", priority=5
    )
    RuleFactory(name="everyone", agent=AgentFactory(agent_name="greeter"), priority=9)


def test_staff_sees_every_rule_with_its_verdict(staff_api, rules):
    r = staff_api.post(URL, {"room_name": "support-1", "participant_identity": "u"}, format="json")
    assert r.status_code == 200
    body = r.json()
    assert [(v["rule"], v["outcome"]) for v in body["rules"]] == [
        ("vip first", "not_matched"),
        ("support", "applied"),
        ("everyone", "applied"),
    ]
    assert body["rules"][0]["reason"] == "room 'support-1' does not match prefix 'vip-'"
    assert body["room_config"] == {
        "agents": [{"agent_name": "helper", "metadata": ""}, {"agent_name": "greeter", "metadata": ""}]
    }
    assert body["token_claims"]["video"] == {
        "roomJoin": True,
        "room": "support-1",
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": True,
    }
    assert [a["agentName"] for a in body["token_claims"]["roomConfig"]["agents"]] == ["helper", "greeter"]


def test_a_draft_rule_is_tried_without_saving(staff_api, rules):
    from agents_app.models import DispatchRule

    draft = {
        "name": "try",
        "agent_name": "helper",
        "priority": 0,
        "room": {"kind": "glob", "value": "*"},
        "stop": True,
    }
    r = staff_api.post(URL, {"room_name": "vip-1", "draft_rule": draft}, format="json")
    assert r.status_code == 200
    assert [a["agent_name"] for a in r.json()["agents"]] == ["helper"]
    assert not DispatchRule.objects.filter(name="try").exists()
    bad = {**draft, "room": {"kind": "regex", "value": "(a+)+"}}
    r = staff_api.post(URL, {"room_name": "vip-1", "draft_rule": bad}, format="json")
    assert r.status_code == 400 and "draft_rule.room_match_value" in r.json()["detail"]


def test_client_key_is_scoped_to_its_rooms(api, rules):
    _, key = make_client("web", rooms=["support-*"])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    assert api.post(URL, {"room_name": "support-2"}, format="json", **auth).status_code == 200
    r = api.post(URL, {"room_name": "vip-2"}, format="json", **auth)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"


def test_explain_needs_authentication_and_valid_input(api, staff_api, rules):
    assert api.post(URL, {"room_name": "x"}, format="json").status_code == 401
    r = staff_api.post(URL, {"participant_identity": "x"}, format="json")
    assert r.status_code == 400 and "room_name" in r.json()["detail"]


def test_admin_explain_page_shows_the_verdict(client, admin_user, rules):
    client.force_login(admin_user)
    page = client.post("/admin/agents_app/dispatchrule/explain/", {"sample_room": "vip-9"})
    text = page.content.decode()
    assert page.status_code == 200
    assert "gets:" in text and "concierge" in text
    assert "rule &#x27;vip first&#x27; stopped evaluation" in text or "vip first" in text


def test_admin_explain_page_tries_the_unsaved_rule_from_the_rule_form(client, admin_user, rules):
    client.force_login(admin_user)
    helper = AgentFactory(agent_name="helper")
    form = {
        "sample_room": "lobby",
        "name": "new rule",
        "priority": "0",
        "room_match_kind": "exact",
        "room_match_value": "lobby",
        "agent": str(helper.pk),
        "metadata_template": '{"r": "{{room_name}}"}',
        "delivery": "explicit",
        "stop": "on",
    }
    text = client.post("/admin/agents_app/dispatchrule/explain/", form).content.decode()
    assert "with the unsaved rule" in text
    assert "<b>helper</b> (rule “new rule”, explicit)" in text
    form["metadata_template"] = '{"r": "{{bogus}}"}'
    text = client.post("/admin/agents_app/dispatchrule/explain/", form).content.decode()
    assert "unknown placeholder {{bogus}}" in text


@pytest.fixture
def tenants():
    """Two clients' rooms: `sec-*` (the asker's) and `vip-*` (someone else's)."""
    for priority, (rule, agent, prefix, metadata) in enumerate(
        [
            ("sec guard", "guard", "sec-", {"shared": "sec"}),
            ("vip concierge", "concierge", "vip-", {"secret": "vip"}),
        ],
        start=1,
    ):
        agent = AgentFactory(agent_name=agent, default_metadata=metadata)
        RuleFactory(
            name=rule, agent=agent, room_match_kind="prefix", room_match_value=prefix, priority=priority
        )
    RuleFactory(name="everyone", agent=AgentFactory(agent_name="greeter"), priority=9)
    _, key = make_client("sec", rooms=["sec-*"], agent_names=["guard"], client_agents=True)
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_a_client_sees_only_rules_and_agents_touching_its_room(api, staff_api, tenants):
    r = api.post(URL, {"room_name": "sec-1"}, format="json", **tenants)
    assert r.status_code == 200
    text = r.content.decode()
    assert [v["rule"] for v in r.json()["rules"]] == ["sec guard", "everyone"]
    assert "vip" not in text and "concierge" not in text
    # staff still sees every rule
    r = staff_api.post(URL, {"room_name": "sec-1"}, format="json")
    assert [v["rule"] for v in r.json()["rules"]] == ["sec guard", "vip concierge", "everyone"]


def test_a_draft_naming_an_agent_the_client_may_not_name_is_refused_as_unknown(api, tenants):
    draft = {"name": "try", "room": {"kind": "glob", "value": "*"}}

    def ask(agent_name):
        body = {"room_name": "sec-1", "draft_rule": {**draft, "agent_name": agent_name}}
        return api.post(URL, body, format="json", **tenants)

    mine = ask("guard")
    assert mine.status_code == 200 and [v["rule"] for v in mine.json()["rules"]][0] == "sec guard"
    other, unknown = ask("concierge"), ask("no-such-agent")
    assert other.status_code == unknown.status_code == 400
    assert other.json() == {
        "error": "invalid",
        "detail": {"draft_rule.agent_name": ["unknown agent 'concierge'"]},
    }
    assert unknown.json()["detail"] == {"draft_rule.agent_name": ["unknown agent 'no-such-agent'"]}


def test_a_draft_with_a_null_metadata_template_is_tried_as_the_schema_allows(staff_api, rules):
    draft = {
        "agent_name": "helper",
        "room": {"kind": "glob", "value": "support-*"},
        "priority": 1,
        "metadata_template": None,
    }

    r = staff_api.post(URL, {"room_name": "support-1", "draft_rule": draft}, format="json")

    assert r.status_code == 200, r.content
    assert ("(draft)", "applied") in [(v["rule"], v["outcome"]) for v in r.json()["rules"]]


@pytest.mark.parametrize(
    ("draft", "field"),
    [
        ({"name": ""}, "name"),
        ({"room": {"kind": "glob", "value": "x" * 257}}, "room"),
        ({"metadata_template": {"a": "{{nope}}"}}, None),
    ],
)
def test_a_draft_the_schema_refuses_is_400_naming_the_field(staff_api, rules, draft, field):
    body = {"agent_name": "helper", "room": {"kind": "glob", "value": "support-*"}, **draft}

    r = staff_api.post(URL, {"room_name": "support-1", "draft_rule": body}, format="json")

    assert r.status_code == 400
    detail = r.json()["detail"]
    if field is None:  # what no schema can say: named with the draft's dotted field
        assert list(detail) == ["draft_rule.metadata_template"]
    else:
        assert list(detail) == ["draft_rule"] and list(detail["draft_rule"]) == [field]
