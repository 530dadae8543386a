"""`GET /api/v1/rooms/{room}/diagnosis`: the doctor over HTTP, scoped like the rest of the API."""

from __future__ import annotations

import pytest

from tests.factories import AgentFactory, RuleFactory, make_client

from .conftest import agents_in, dispatch, eventually, person_joins

pytestmark = pytest.mark.django_db


@pytest.fixture
def support_room(lk):
    agent = AgentFactory(agent_name="support-agent")
    RuleFactory(name="support rooms", agent=agent, room_match_value="support-*", delivery="explicit")
    lk.control.add_worker("support-agent")
    person_joins(lk, "support-1", "ann")
    dispatch("support-1", "support-agent")
    eventually(lambda: agents_in(lk, "support-1"))
    return "support-1"


def test_staff_get_the_whole_chain(staff_api, support_room):
    response = staff_api.get(f"/api/v1/rooms/{support_room}/diagnosis")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["exit_code"] == 0
    assert [link["state"] for link in body["links"]] == ["ok"] * 8
    assert body["links"][6]["summary"].startswith("'support-agent': agent-AJ_")
    assert body["expected_agents"] == ["support-agent"]


def test_a_client_gets_the_cause_and_fix_for_a_room_in_its_scope(api, lk):
    _, key = make_client("web", rooms=["support-*"])
    person_joins(lk, "support-2", "ann")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    response = api.get("/api/v1/rooms/support-2/diagnosis", {"identity": "ann"})

    body = response.json()
    assert response.status_code == 200 and body["exit_code"] == 1
    assert body["first_broken_link"] == 2
    assert "No enabled rule matches room 'support-2' and identity 'ann'" in body["cause"]
    assert body["fix"].startswith("Add a dispatch rule")


def test_livekit_down_is_still_an_answer(staff_api, lk):
    lk.control.faults(down=True)

    body = staff_api.get("/api/v1/rooms/support-3/diagnosis").json()

    assert body["status"] == "livekit_unavailable" and body["exit_code"] == 2
    assert body["links"][0]["state"] == "broken"


def test_a_room_outside_the_client_patterns_is_403(api, lk):
    _, key = make_client("web", rooms=["support-*"])
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    response = api.get("/api/v1/rooms/sales-1/diagnosis")

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert "outside this client's room patterns" in str(response.json()["detail"])


def test_without_credentials_is_401(api, lk):
    response = api.get("/api/v1/rooms/support-1/diagnosis")

    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


def test_an_agent_name_with_control_characters_is_400(staff_api, lk):
    response = staff_api.get("/api/v1/rooms/support-1/diagnosis", {"agent": "bad\x07name"})

    assert response.status_code == 400
    assert response.json()["detail"] == {"agent": ["Must not contain control characters."]}


def test_the_endpoint_and_its_errors_are_in_the_openapi_schema(staff_api):
    schema = staff_api.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    operation = schema["paths"]["/api/v1/rooms/{room_name}/diagnosis"]["get"]
    assert set(operation["responses"]) == {"200", "400", "401", "403"}
    assert {p["name"] for p in operation["parameters"]} >= {"room_name", "agent", "identity"}
