"""Admin: validation on save, bulk actions, keys shown once, warnings and history."""

import pytest
from django.contrib.messages import get_messages

from agents_app.models import Agent, ApiClient, DispatchRule
from agents_app.rules import Join
from agents_app.selectors import config_get, key_digest
from tests.factories import AgentFactory, RuleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client, admin_user):
    client.force_login(admin_user)
    return client


def rule_form(agent, **over):
    form = {
        "name": "interviews",
        "enabled": "on",
        "priority": "10",
        "room_match_kind": "regex",
        "room_match_value": r"interview-(?P<cid>\d+)",
        "identity_match_kind": "",
        "identity_match_value": "",
        "attribute_conditions": "{}",
        "agent": str(agent.pk),
        "metadata_template": '{"candidate": "{{match.cid}}"}',
        "delivery": "token",
    }
    form.update(over)
    return form


def test_valid_rule_saves_and_is_live_for_tokens(admin_client_):
    agent = AgentFactory(agent_name="interviewer")
    r = admin_client_.post("/admin/agents_app/dispatchrule/add/", rule_form(agent))
    assert r.status_code == 302
    assert [a.agent_name for a in config_get().rules.evaluate(Join("interview-5")).agents] == ["interviewer"]


@pytest.mark.parametrize(
    "over,field,message",
    [
        ({"room_match_value": "(a+)+"}, "room_match_value", "catastrophically"),
        ({"room_match_value": "x" * 257}, "room_match_value", "256"),
        ({"metadata_template": '{"x": "{{match.nope}}"}'}, "metadata_template", "unknown placeholder"),
        ({"attribute_conditions": '{"tier": "gold"}'}, "attribute_conditions", "kind"),
        (
            {"identity_match_kind": "regex", "identity_match_value": "(?P<x"},
            "identity_match_value",
            "does not compile",
        ),
    ],
)
def test_invalid_rules_are_refused_with_the_field_named(admin_client_, over, field, message):
    agent = AgentFactory(agent_name="interviewer")
    r = admin_client_.post("/admin/agents_app/dispatchrule/add/", rule_form(agent, **over))
    assert r.status_code == 200
    errors = r.context["adminform"].form.errors
    assert field in errors and message in " ".join(errors[field])
    assert not DispatchRule.objects.exists()


def test_duplicate_enabled_rule_is_refused(admin_client_):
    agent = AgentFactory(agent_name="interviewer")
    admin_client_.post("/admin/agents_app/dispatchrule/add/", rule_form(agent))
    r = admin_client_.post("/admin/agents_app/dispatchrule/add/", rule_form(agent, name="twin"))
    assert r.status_code == 200 and "same match, agent and priority" in r.content.decode()
    assert DispatchRule.objects.count() == 1


def test_bulk_actions_bump_the_version_and_report_counts(admin_client_):
    rules = [RuleFactory(room_match_value=f"r{i}-*") for i in range(3)]
    before = config_get()
    r = admin_client_.post(
        "/admin/agents_app/dispatchrule/",
        {"action": "disable_rules", "_selected_action": [str(x.pk) for x in rules[:2]]},
        follow=True,
    )
    assert (
        "Disabled 2 rule(s)." in [str(m) for m in get_messages(r.wsgi_request)]
        or "Disabled 2 rule(s)." in r.content.decode()
    )
    after = config_get()
    assert after.version > before.version
    assert sorted(s.spec.name for s in after.rules.rules if s.spec.enabled) == [rules[2].name]
    admin_client_.post(
        "/admin/agents_app/dispatchrule/",
        {"action": "duplicate_rules", "_selected_action": [str(rules[2].pk)]},
    )
    copy = DispatchRule.objects.get(name=f"copy of {rules[2].name}")
    assert copy.enabled is False and copy.room_match_value == rules[2].room_match_value


def test_rule_list_warns_about_rules_that_never_fire(admin_client_):
    RuleFactory(name="catch all", room_match_value="*", priority=1, stop=True)
    RuleFactory(name="support", room_match_kind="prefix", room_match_value="support-", priority=5)
    text = admin_client_.get("/admin/agents_app/dispatchrule/").content.decode()
    assert "never fires: stop rule &#x27;catch all&#x27; matches first" in text
    assert "1 enabled rule(s) can never fire." in text
    assert "Explain / test rules" in text


def test_api_client_key_is_shown_once_and_stored_as_digest(admin_client_):
    r = admin_client_.post(
        "/admin/agents_app/apiclient/add/",
        {
            "name": "web",
            "enabled": "on",
            "room_patterns": '["demo-*"]',
            "max_ttl_s": "3600",
            "can_publish": "on",
            "can_subscribe": "on",
            "can_publish_data": "on",
            "rate_limit_per_minute": "60",
        },
        follow=True,
    )
    text = r.content.decode()
    key = text.split("<code id='new-api-key'>")[1].split("</code>")[0]
    client = ApiClient.objects.get(name="web")
    assert key.startswith("dpk_") and client.key_digest == key_digest(key) and key not in client.key_digest
    page = admin_client_.get(f"/admin/agents_app/apiclient/{client.pk}/change/").content.decode()
    assert key not in page and client.key_prefix in page
    assert key not in admin_client_.get(f"/admin/agents_app/apiclient/{client.pk}/history/").content.decode()


def test_revoke_action_disables_keys(admin_client_):
    from tests.factories import make_client

    client, key = make_client("web")
    admin_client_.post(
        "/admin/agents_app/apiclient/", {"action": "revoke", "_selected_action": [str(client.pk)]}
    )
    from agents_app.selectors import config_get, key_digest

    assert config_get().clients[key_digest(key)].enabled is False


def test_unnamed_agent_warns_about_automatic_dispatch(admin_client_):
    r = admin_client_.post(
        "/admin/agents_app/agent/add/",
        {
            "agent_name": "",
            "display_name": "Default",
            "enabled": "on",
            "default_metadata": "{}",
            "join_deadline_s": "15",
            "max_attempts": "3",
        },
        follow=True,
    )
    assert "sends to every new room automatically" in r.content.decode()
    assert Agent.objects.filter(agent_name="").exists()


def test_history_records_who_changed_what(admin_client_, admin_user):
    agent = AgentFactory(agent_name="interviewer")
    admin_client_.post("/admin/agents_app/dispatchrule/add/", rule_form(agent))
    rule = DispatchRule.objects.get()
    admin_client_.post(f"/admin/agents_app/dispatchrule/{rule.pk}/change/", rule_form(agent, priority="30"))
    latest, first = rule.history.all()[:2]
    assert latest.history_user == admin_user
    delta = latest.diff_against(first)
    assert [(c.field, c.old, c.new) for c in delta.changes] == [("priority", 10, 30)]
    page = admin_client_.get(f"/admin/agents_app/dispatchrule/{rule.pk}/history/").content.decode()
    assert "admin" in page


def test_only_staff_with_permissions_edit(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw-viewer-123", is_staff=True)
    client.force_login(user)
    assert client.get("/admin/agents_app/dispatchrule/").status_code == 403
    assert client.post("/admin/agents_app/dispatchrule/explain/", {"sample_room": "x"}).status_code == 403
