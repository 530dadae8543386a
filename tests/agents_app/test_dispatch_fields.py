"""LiveKit's dispatch fields (deployment, attributes) on rules, tokens, explain, export/import and
the Dispatch API; and the canary prefix no rule, client or token may use."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from livekit.api import TokenVerifier

from agents_app.models import ApiClient, DispatchRule
from agents_app.transfer import rules_export, rules_import
from rooms_app.models import Dispatch
from tests.factories import AgentFactory, RuleFactory, make_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def staged():
    agent = AgentFactory(agent_name="interviewer")
    return RuleFactory(
        name="staging interviews",
        agent=agent,
        room_match_value="stg-*",
        deployment="staging",
        dispatch_attributes={"tier": "gold"},
    )


def test_token_carries_deployment_and_attributes(api, settings, staged):
    _, key = make_client(rooms=["stg-*"])
    r = api.post(
        "/api/v1/token",
        {"room_name": "stg-1", "participant_identity": "ann"},
        format="json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert r.status_code == 201, r.content
    claims = TokenVerifier(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET).verify(
        r.json()["participant_token"]
    )
    [agent] = claims.room_config.agents
    assert (agent.agent_name, agent.deployment, dict(agent.attributes)) == (
        "interviewer",
        "staging",
        {"tier": "gold"},
    )


def test_explain_shows_them(staff_api, staged):
    body = staff_api.post("/api/v1/rules/explain", {"room_name": "stg-1"}, format="json").json()
    assert body["room_config"]["agents"] == [
        {"agent_name": "interviewer", "metadata": "", "deployment": "staging", "attributes": {"tier": "gold"}}
    ]
    assert body["token_claims"]["roomConfig"]["agents"][0]["deployment"] == "staging"


def test_explain_draft_rejects_a_deployment_livekit_refuses(staff_api, staged):
    draft = {
        "agent_name": "interviewer",
        "room": {"kind": "glob", "value": "x-*"},
        "deployment": "my_staging",
    }
    r = staff_api.post("/api/v1/rules/explain", {"room_name": "x-1", "draft_rule": draft}, format="json")
    assert r.status_code == 400
    assert "without '_'" in r.json()["detail"]["draft_rule"]["deployment"][0]


def test_export_import_round_trip(staged):
    exported = rules_export()
    [rule] = exported["rules"]
    assert (rule["deployment"], rule["dispatch_attributes"]) == ("staging", {"tier": "gold"})
    DispatchRule.objects.all().delete()
    rules_import(exported)
    again = DispatchRule.objects.get()
    assert (again.deployment, again.dispatch_attributes) == ("staging", {"tier": "gold"})
    assert rules_import(exported) == []  # idempotent: no diff


def test_dispatch_api_records_them(staff_api, staged):
    r = staff_api.post(
        "/api/v1/dispatches",
        {
            "room_name": "stg-2",
            "agent_name": "interviewer",
            "deployment": "staging",
            "attributes": {"a": "b"},
        },
        format="json",
    )
    assert r.status_code == 202, r.content
    row = Dispatch.objects.get()
    assert (row.deployment, row.attributes) == ("staging", {"a": "b"})
    bad = staff_api.post(
        "/api/v1/dispatches",
        {"room_name": "stg-3", "agent_name": "interviewer", "deployment": "a b"},
        format="json",
    )
    assert bad.status_code == 400 and "deployment" in json.dumps(bad.json()["detail"])


# --- the canary prefix is reserved ------------------------------------------------------------


def test_no_rule_may_target_canary_rooms(staged):
    rule = DispatchRule(name="sneaky", agent=staged.agent, room_match_value="dp-canary-*")
    with pytest.raises(ValidationError) as error:
        rule.full_clean()
    assert "reserved for canaries" in str(error.value.message_dict["room_match_value"])


def test_broad_rules_never_match_canary_rooms(staff_api):
    RuleFactory(name="everyone", agent=AgentFactory(agent_name="greeter"), room_match_value="*")
    body = staff_api.post("/api/v1/rules/explain", {"room_name": "dp-canary-greeter-1"}, format="json").json()
    assert (
        body["agents"] == [] and body["rules"][0]["reason"] == "the room name is reserved for canary probes"
    )


def test_no_client_pattern_or_token_for_canary_rooms(api):
    client = ApiClient(name="c", room_patterns=["dp-canary-*"])
    with pytest.raises(ValidationError):
        client.clean()
    _, key = make_client(rooms=["*"])
    r = api.post(
        "/api/v1/token", {"room_name": "dp-canary-x"}, format="json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert r.status_code == 403 and "reserved for canaries" in json.dumps(r.json())


def test_no_dispatch_api_call_for_canary_rooms(staff_api):
    AgentFactory(agent_name="greeter")
    r = staff_api.post(
        "/api/v1/dispatches", {"room_name": "dp-canary-x", "agent_name": "greeter"}, format="json"
    )
    assert r.status_code == 403 and "reserved for canaries" in json.dumps(r.json())
    assert not Dispatch.objects.exists()
