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
