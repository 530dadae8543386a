"""The Dispatch API and the room state endpoint: scope, every error class, and the answers a
frontend relies on."""

from __future__ import annotations

import pytest
from django.utils import timezone

from rooms_app import services
from rooms_app.models import Dispatch
from tests.factories import AgentFactory, make_client, token_recorded

pytestmark = pytest.mark.django_db


@pytest.fixture
def agents():
    return AgentFactory(agent_name="support-agent", default_metadata={"lang": "en"}), AgentFactory(
        agent_name="sales-agent"
    )


@pytest.fixture
def key(agents):
    _, key = make_client("web", rooms=["support-*"], agent_names=["support-agent"])
    return key


def auth(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def create(api, key, **body):
    return api.post(
        "/api/v1/dispatches",
        {"room_name": "support-1", "agent_name": "support-agent", **body},
        format="json",
        **auth(key),
    )


def test_create_returns_202_with_the_pending_dispatch(api, key, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as sent:
        answer = create(api, key, metadata='{"ticket": 7}')
    assert answer.status_code == 202
    body = answer.json()
    assert (
        body["status"] == "pending"
        and body["room_name"] == "support-1"
        and body["agent_name"] == "support-agent"
    )
    assert body["source"] == "api" and body["metadata"] == '{"ticket": 7}' and body["attempt"] == 1
    assert [e["status"] for e in body["events"]] == ["pending"]
    assert len(sent) == 1  # the CreateDispatch task


def test_metadata_defaults_to_the_agents(api, key):
    assert create(api, key).json()["metadata"] == '{"lang":"en"}'


def test_a_second_request_is_409_with_the_live_dispatch(api, key):
    first = create(api, key).json()
    again = create(api, key)
    assert again.status_code == 409
    body = again.json()
    assert body["error"] == "already_dispatched" and body["dispatch"]["id"] == first["id"]
    assert body["metadata_applied"] is True
    assert Dispatch.objects.count() == 1


def test_a_live_token_dispatch_never_silently_drops_the_callers_metadata(api, key):
    [token_row] = token_recorded("support-1", "ann", "support-agent", metadata='{"from":"token"}')
    answer = create(api, key, metadata='{"topic": "billing"}')
    assert answer.status_code == 409
    body = answer.json()
    assert body["metadata_applied"] is False and "NOT applied" in body["detail"]
    assert body["dispatch"]["id"] == token_row.pk and body["dispatch"]["metadata"] == '{"from":"token"}'
    assert "not applied" in body["dispatch"]["events"][-1]["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"room_name": 5}, "room_name"),
        ({"agent_name": None}, "agent_name"),
        ({"metadata": {"a": 1}}, "metadata"),
        ({"metadata": "x" * (64 * 1024 + 1)}, "metadata"),
        ({"room_name": "bad\nname"}, "room_name"),
        ({"room_name": "r" * 257}, "room_name"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_input_is_400_naming_the_field(api, key, body, field):
    answer = create(api, key, **body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid" and field in answer.json()["detail"]


def test_missing_fields_and_malformed_json(api, key):
    answer = api.post("/api/v1/dispatches", {}, format="json", **auth(key))
    assert answer.status_code == 400 and {"room_name", "agent_name"} <= set(answer.json()["detail"])
    answer = api.post("/api/v1/dispatches", "{oops", content_type="application/json", **auth(key))
    assert answer.status_code == 400 and answer.json()["error"] == "malformed_json"


def test_unauthenticated_is_401(api, agents):
    assert api.post("/api/v1/dispatches", {}, format="json").status_code == 401
    answer = api.post("/api/v1/dispatches", {}, format="json", **auth("dpk_unknown"))
    assert answer.status_code == 401 and answer.json()["error"] == "unauthenticated"


def test_an_agent_outside_the_clients_scope_is_answered_as_an_unknown_one(api, key):
    outside = create(api, key, agent_name="sales-agent")
    made_up = create(api, key, agent_name="nobody")

    assert outside.status_code == made_up.status_code == 404
    assert outside.json()["detail"] == {"agent_name": ["unknown agent 'sales-agent'"]}
    assert made_up.json()["detail"] == {"agent_name": ["unknown agent 'nobody'"]}
    assert not Dispatch.objects.exists()


def test_room_outside_the_clients_patterns_is_403(api, key):
    answer = create(api, key, room_name="sales-1")
    assert answer.status_code == 403 and "room_name" in answer.json()["detail"]
    assert not Dispatch.objects.exists()


def test_unknown_agent_is_404(api, key):
    answer = create(api, key, agent_name="nobody")
    assert answer.status_code == 404 and answer.json()["detail"] == {"agent_name": ["unknown agent 'nobody'"]}


def test_disabled_agent_is_403(api, key, agents):
    agents[0].enabled = False
    agents[0].save()
    assert create(api, key).status_code == 403


def test_get_is_scoped_to_the_clients_rooms(api, key, agents):
    mine = create(api, key).json()["id"]
    assert api.get(f"/api/v1/dispatches/{mine}", **auth(key)).json()["id"] == mine
    room = services.room_get_or_create(name="sales-1")
    theirs, _ = services.dispatch_create(room=room, agent=agents[1], source="api")
    answer = api.get(f"/api/v1/dispatches/{theirs.pk}", **auth(key))
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    assert api.get("/api/v1/dispatches/999999", **auth(key)).status_code == 404


def test_delete_cancels_then_409(api, key, django_capture_on_commit_callbacks):
    dispatch_id = create(api, key).json()["id"]
    with django_capture_on_commit_callbacks() as sent:
        answer = api.delete(f"/api/v1/dispatches/{dispatch_id}", **auth(key))
    assert answer.status_code == 202 and answer.json()["status"] == "cancelled"
    assert len(sent) == 1  # DeleteDispatch in LiveKit, by a task
    again = api.delete(f"/api/v1/dispatches/{dispatch_id}", **auth(key))
    assert again.status_code == 409 and again.json()["error"] == "conflict"


def test_staff_may_dispatch_any_agent(staff_api, agents):
    answer = staff_api.post(
        "/api/v1/dispatches", {"room_name": "sales-9", "agent_name": "sales-agent"}, format="json"
    )
    assert answer.status_code == 202
    assert Dispatch.objects.get().requested_by == "staff:admin"


def test_room_state_lists_wanted_agents_and_ready(api, key, agents):
    assert api.get("/api/v1/rooms/support-5", **auth(key)).json() == {
        "room_name": "support-5",
        "status": "unknown",
        "sid": "",
        "num_participants": 0,
        "ready": False,
        "agents": [],
    }
    room = services.room_observe(name="support-5", sid="RM_5", started_at=timezone.now())
    dispatch, _ = services.dispatch_create(room=room, agent=agents[0], source="rule")
    body = api.get("/api/v1/rooms/support-5", **auth(key)).json()
    assert body["status"] == "active" and body["ready"] is False
    assert body["agents"][0] | {"joined_at": None} == {
        "agent_name": "support-agent",
        "status": "pending",
        "dispatch_id": dispatch.pk,
        "attempt": 1,
        "source": "rule",
        "participant_identity": "",
        "joined_at": None,
        "last_error": "",
        "waiting_for_livekit_since": None,
        "agents_removed": [],
    }
    Dispatch.objects.filter(pk=dispatch.pk).update(
        status="agent_joined", participant_identity="agent-AJ_1", joined_at=timezone.now()
    )
    body = api.get("/api/v1/rooms/support-5", **auth(key)).json()
    assert body["ready"] is True and body["agents"][0]["participant_identity"] == "agent-AJ_1"


def test_room_state_follows_a_fallback(api, key, agents):
    room = services.room_observe(name="support-6", sid="RM_6", started_at=timezone.now())
    failed, _ = services.dispatch_create(room=room, agent=agents[0], source="rule")
    Dispatch.objects.filter(pk=failed.pk).update(status="no_worker")
    services.dispatch_create(
        room=room, agent=agents[1], source="fallback", previous=failed, status="agent_joined"
    )
    body = api.get("/api/v1/rooms/support-6", **auth(key)).json()
    assert [(a["agent_name"], a["status"]) for a in body["agents"]] == [("sales-agent", "agent_joined")]
    assert body["ready"] is True


def test_room_state_out_of_scope_is_403(api, key):
    answer = api.get("/api/v1/rooms/sales-1", **auth(key))
    assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
    assert api.get("/api/v1/rooms/sales-1").status_code == 401


def test_endpoints_are_in_the_openapi_schema(staff_api):
    schema = staff_api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    assert {"post"} <= set(paths["/api/v1/dispatches"])
    assert {"get", "delete"} <= set(paths["/api/v1/dispatches/{dispatch_id}"])
    assert set(paths["/api/v1/dispatches"]["post"]["responses"]) >= {"202", "400", "401", "403", "404", "409"}
    assert set(paths["/api/v1/dispatches/{dispatch_id}"]["delete"]["responses"]) >= {"202", "404", "409"}
    assert set(paths["/api/v1/rooms/{room_name}"]["get"]["responses"]) >= {"200", "401", "403"}
    assert set(paths["/livekit/webhook"]["post"]["responses"]) >= {"200", "401"}
