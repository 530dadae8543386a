"""Two tenants whose names are near each other, as an attacker holding one tenant's key
would probe: no answer of the API (diagnosis, explain, dispatch create/read/cancel and their
errors, rooms, timelines) carries a string of the other tenant, and the other tenant's names
are answered exactly as names that exist nowhere.

Tenant A ("acme-web") owns rooms `acme-*` and the agent `acme-agent`. Tenant B ("acmf-web")
owns rooms `acmf-*`, the agent `acme-agnet` (one typo away from A's), a rule "acmf rooms",
default metadata "acmf-private", and a worker name `acme-agentb` recorded without a room. Its
worker is live in room `acmf-1`, where A's doctor would otherwise suggest it as a close name.
"""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from rooms_app.models import AgentSeen, Dispatch, Room
from tests.factories import AgentFactory, RuleFactory, make_client
from watch_app.models import WorkerEndpoint

from ..doctor.conftest import agents_in, dispatch, eventually, person_joins

pytestmark = pytest.mark.django_db

PUBLIC_URL = "wss://livekit.example.com"
INTERNAL_HOST = "10.9.8.7"
INTERNAL_ERROR = f"cannot reach http://{INTERNAL_HOST}:8081/: connection refused"


@pytest.fixture
def tenants(lk, settings):
    settings.PUBLIC_LIVEKIT_URL = PUBLIC_URL
    acme = AgentFactory(agent_name="acme-agent", default_metadata={"note": "acme-own"})
    acmf = AgentFactory(agent_name="acme-agnet", default_metadata={"note": "acmf-private"})
    RuleFactory(name="acme rooms", agent=acme, room_match_value="acme-*", delivery="explicit")
    RuleFactory(name="acmf rooms", agent=acmf, room_match_value="acmf-*", delivery="explicit")
    _, key_a = make_client("acme-web", rooms=["acme-*"], agent_names=["acme-agent"])
    _, key_b = make_client("acmf-web", rooms=["acmf-*"], agent_names=["acme-agnet"])

    # B's room: live in LiveKit with B's worker in it, and in the ledger.
    lk.control.add_worker("acme-agnet")
    person_joins(lk, "acmf-1", "bob")
    dispatch("acmf-1", "acme-agnet")
    eventually(lambda: agents_in(lk, "acmf-1"))
    now = timezone.now()
    room_b = Room.objects.create(name="acmf-1", status=Room.Status.ACTIVE)
    b_dispatch = Dispatch.objects.create(
        room=room_b,
        agent=acmf,
        agent_name="acme-agnet",
        source="api",
        requested_by="acmf-web",
        status="agent_joined",
        metadata='{"note": "acmf-private"}',
        joined_at=now,
    )
    AgentSeen.objects.create(
        agent_name="acme-agnet", room_name="acmf-1", how="agent joined", last_seen_at=now
    )
    AgentSeen.objects.create(agent_name="acme-agentb", how="job in ListDispatch", last_seen_at=now)
    # The operator polls A's workers at an internal address; its errors are the operator's.
    WorkerEndpoint.objects.create(
        agent=acme,
        url=f"http://{INTERNAL_HOST}:8081/",
        polled_at=now,
        healthy=False,
        last_error=INTERNAL_ERROR,
    )

    # A's room: live, and its agent's dispatch found no worker (the doctor looks for close names).
    person_joins(lk, "acme-1", "ann")
    room_a = Room.objects.create(name="acme-1", status=Room.Status.ACTIVE)
    a_dispatch = Dispatch.objects.create(
        room=room_a,
        agent=acme,
        agent_name="acme-agent",
        source="api",
        requested_by="acme-web",
        status="no_worker",
        ended_at=now,
        last_error="no worker took the job",
    )
    return {"a": key_a, "b": key_b, "b_dispatch": b_dispatch.pk, "a_dispatch": a_dispatch.pk}


def other_tenant_strings(lk) -> list[str]:
    """B's names, and the operator's internal addresses (LiveKit's, the workers')."""
    return ["acme-agnet", "acme-agentb", "acmf", lk.url, lk.url.split("//")[1], INTERNAL_HOST]


def assert_nothing_of_b(response, lk) -> str:
    body = response.content.decode()
    leaked = [s for s in other_tenant_strings(lk) if s in body]
    assert not leaked, f"{response.request['PATH_INFO']} leaked {leaked}: {body[:2000]}"
    return body


def as_a(api, tenants):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tenants['a']}")
    return api


def test_the_doctor_tells_a_client_about_its_room_and_nothing_of_the_other(api, tenants, lk):
    response = as_a(api, tenants).get("/api/v1/rooms/acme-1/diagnosis")

    assert response.status_code == 200
    assert_nothing_of_b(response, lk)
    body = response.json()
    job = body["links"][4]
    assert job["state"] == "broken"
    assert "no worker is registered as exactly 'acme-agent' on LiveKit at " + PUBLIC_URL in job["cause"]
    assert body["livekit_url"] == PUBLIC_URL


def test_staff_see_the_close_names_a_client_does_not(staff_api, tenants, lk):
    """The same question from a superuser: the other tenant's worker is named, so the
    client's answer above is filtered, not merely missing the facts."""
    body = staff_api.get("/api/v1/rooms/acme-1/diagnosis").content.decode()

    assert "'acme-agnet' (room 'acmf-1')" in body
    assert "acme-agentb" in body
    assert lk.url in body and INTERNAL_ERROR in body


def _without(body: dict, name: str) -> str:
    """The answer with the asked name and the moment of the check taken out."""
    body = {k: v for k, v in body.items() if k != "checked_at"}
    return json.dumps(body).replace(name, "<asked>")


def test_asking_the_doctor_about_the_other_tenants_agent_is_asking_about_nobody(api, tenants, lk):
    client = as_a(api, tenants)
    other = client.get("/api/v1/rooms/acme-1/diagnosis", {"agent": "acme-agnet"})
    nobody = client.get("/api/v1/rooms/acme-1/diagnosis", {"agent": "acme-agnex"})
    near = client.get("/api/v1/rooms/acme-1/diagnosis", {"agent": "acme-agne"})

    assert other.status_code == nobody.status_code == near.status_code == 200
    assert _without(other.json(), "acme-agnet") == _without(nobody.json(), "acme-agnex")
    assert "no agent named exactly 'acme-agnet' is configured" in other.json()["links"][1]["summary"]
    for response in (nobody, near):
        assert_nothing_of_b(response, lk)
    assert "configured agents with close names: 'acme-agent'." in near.json()["cause"]


def test_explain_shows_only_the_rules_that_take_the_clients_room(api, tenants, lk):
    client = as_a(api, tenants)
    response = client.post("/api/v1/rules/explain", {"room_name": "acme-1"}, format="json")

    assert response.status_code == 200
    assert_nothing_of_b(response, lk)
    assert [v["rule"] for v in response.json()["rules"]] == ["acme rooms"]

    draft = {"room": {"kind": "glob", "value": "acme-*"}}
    other = client.post(
        "/api/v1/rules/explain",
        {"room_name": "acme-1", "draft_rule": {**draft, "agent_name": "acme-agnet"}},
        format="json",
    )
    nobody = client.post(
        "/api/v1/rules/explain",
        {"room_name": "acme-1", "draft_rule": {**draft, "agent_name": "acme-agnex"}},
        format="json",
    )
    assert other.status_code == nobody.status_code == 400
    assert other.json()["detail"] == {"draft_rule.agent_name": ["unknown agent 'acme-agnet'"]}
    assert nobody.json()["detail"] == {"draft_rule.agent_name": ["unknown agent 'acme-agnex'"]}


def test_dispatching_the_other_tenants_agent_is_answered_as_an_unknown_agent(api, tenants, lk):
    client = as_a(api, tenants)
    other = client.post(
        "/api/v1/dispatches", {"room_name": "acme-2", "agent_name": "acme-agnet"}, format="json"
    )
    nobody = client.post(
        "/api/v1/dispatches", {"room_name": "acme-2", "agent_name": "acme-agnex"}, format="json"
    )

    assert other.status_code == nobody.status_code == 404
    assert other.json()["detail"] == {"agent_name": ["unknown agent 'acme-agnet'"]}
    assert nobody.json()["detail"] == {"agent_name": ["unknown agent 'acme-agnex'"]}
    assert not Dispatch.objects.filter(room__name="acme-2").exists()

    into_b = client.post(
        "/api/v1/dispatches", {"room_name": "acmf-1", "agent_name": "acme-agent"}, format="json"
    )
    assert into_b.status_code == 403 and into_b.json()["error"] == "forbidden"
    assert not Dispatch.objects.filter(room__name="acmf-1", agent_name="acme-agent").exists()


def test_the_other_tenants_dispatch_is_no_dispatch_at_all(api, tenants, lk):
    client = as_a(api, tenants)
    missing = 10**9
    for method in ("get", "delete"):
        other = getattr(client, method)(f"/api/v1/dispatches/{tenants['b_dispatch']}")
        nobody = getattr(client, method)(f"/api/v1/dispatches/{missing}")
        assert other.status_code == nobody.status_code == 404
        assert other.json() == {"error": "not_found", "detail": f"no dispatch {tenants['b_dispatch']}"}
        assert nobody.json() == {"error": "not_found", "detail": f"no dispatch {missing}"}
        assert_nothing_of_b(other, lk)
    assert Dispatch.objects.get(pk=tenants["b_dispatch"]).status == "agent_joined"


def test_the_clients_own_rooms_dispatches_and_timelines_carry_nothing_of_the_other(api, tenants, lk):
    client = as_a(api, tenants)
    created = client.post(
        "/api/v1/dispatches", {"room_name": "acme-1", "agent_name": "acme-agent"}, format="json"
    )
    assert created.status_code == 202
    responses = [
        created,
        client.get(f"/api/v1/dispatches/{created.json()['id']}"),
        client.get(f"/api/v1/dispatches/{tenants['a_dispatch']}"),
        client.get("/api/v1/rooms/acme-1"),
        client.delete(f"/api/v1/dispatches/{created.json()['id']}"),
    ]
    for response in responses:
        assert response.status_code in (200, 202)
        assert_nothing_of_b(response, lk)
    assert [a["agent_name"] for a in responses[3].json()["agents"]] == ["acme-agent"]


def test_the_other_tenants_room_is_refused_without_a_word_about_it(api, tenants, lk):
    client = as_a(api, tenants)
    for path in ("/api/v1/rooms/acmf-1", "/api/v1/rooms/acmf-1/diagnosis"):
        response = client.get(path)
        assert response.status_code == 403
        assert response.json()["detail"] == {
            "room_name": ["room 'acmf-1' is outside this client's room patterns"]
        }
    response = client.post("/api/v1/rules/explain", {"room_name": "acmf-1"}, format="json")
    assert response.status_code == 403 and "acmf rooms" not in response.content.decode()
