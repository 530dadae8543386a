"""The test call's staff JSON endpoints and page: token.json mints through the token path under
the chosen client's scope, room.json reads the ledger under that scope; only staff get either."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission
from livekit.api import TokenVerifier
from rest_framework.test import APIClient

from agents_app.models import ApiClient
from rooms_app.models import Room, TokenFact
from tests.factories import AgentFactory, RuleFactory, make_client, token_recorded

pytestmark = pytest.mark.django_db
TOKEN = "/admin/test-call/token.json"
ROOM = "/admin/test-call/room.json"
PAGE = "/admin/test-call/"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def web():
    RuleFactory(
        name="support rooms",
        agent=AgentFactory(agent_name="support-agent", join_deadline_s=7),
        room_match_value="support-*",
        delivery="token",
    )
    client, _key = make_client("web", rooms=["support-*"])
    return client


def mint(api, body):
    return api.post(TOKEN, body, format="json")


def error_of(response, status):
    assert response.status_code == status, response.content
    body = response.json()
    assert "participant_token" not in body
    return body


def test_mints_under_the_chosen_client_through_the_token_path(staff_api, web, settings):
    r = mint(staff_api, {"client": web.pk, "room_name": "support-1", "participant_identity": "ann"})

    assert r.status_code == 201, r.content
    body = r.json()
    claims = TokenVerifier(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET).verify(
        body["participant_token"]
    )
    assert (claims.identity, claims.video.room) == ("ann", "support-1")
    assert [a.agent_name for a in claims.room_config.agents] == ["support-agent"]
    assert body["server_url"] == "wss://livekit.example.com"
    assert body["client"] == {"id": web.pk, "name": "web"}
    [agent] = body["agents"]
    assert (agent["agent_name"], agent["rule"], agent["delivery"]) == (
        "support-agent",
        "support rooms",
        "token",
    )
    assert agent["expected_within_s"] == 7  # the agent's own join deadline
    doctor = urlsplit(agent["doctor_url"])
    assert doctor.path == "/admin/dispatch-doctor/"
    assert parse_qs(doctor.query) == {"room": ["support-1"], "agent": ["support-agent"], "identity": ["ann"]}
    # The token path's fact, as the REST endpoint records it: the ledger learns of the agent.
    [fact] = TokenFact.objects.all()
    assert (fact.room_name, fact.participant_identity, fact.client) == ("support-1", "ann", "web")
    assert [a["agent_name"] for a in fact.agents] == ["support-agent"]
    assert "test-secret" not in r.content.decode()


def test_a_room_without_a_rule_gets_a_token_and_no_agent(staff_api, web):
    RuleFactory(agent=AgentFactory(agent_name="sales-agent"), room_match_value="sales-*")
    client, _ = make_client("sales-web", rooms=["sales-*", "lobby-*"])

    body = mint(staff_api, {"client": client.pk, "room_name": "lobby-1", "participant_identity": "bo"}).json()

    assert body["agents"] == []
    assert parse_qs(urlsplit(body["doctor_url"]).query) == {"room": ["lobby-1"], "identity": ["bo"]}
    explain = urlsplit(body["explain_url"])
    assert explain.path == "/admin/agents_app/dispatchrule/explain/"
    assert parse_qs(explain.query) == {"sample_room": ["lobby-1"], "sample_identity": ["bo"]}
    assert not TokenFact.objects.exists()


def test_the_room_must_be_in_the_chosen_clients_scope(staff_api, web):
    body = error_of(
        mint(staff_api, {"client": web.pk, "room_name": "sales-1", "participant_identity": "a"}), 403
    )

    assert body == {
        "error": "forbidden",
        "detail": {"room_name": ["room 'sales-1' is outside this client's room patterns"]},
    }
    assert not TokenFact.objects.exists()
    answer = error_of(staff_api.get(ROOM, {"client": web.pk, "room": "sales-1"}), 403)
    assert list(answer["detail"]) == ["room_name"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"room_name": "support-1"}, 400, "client"),
        ({"client": "web", "room_name": "support-1"}, 400, "client"),
        ({"client": True, "room_name": "support-1"}, 400, "client"),
        ({"client": "²", "room_name": "support-1"}, 400, "client"),
        ({"client": -3, "room_name": "support-1"}, 400, "client"),
        ({"client": 99999, "room_name": "support-1"}, 400, "client"),
        ({"client": "{web}", "room_name": 42}, 400, "room_name"),
        (
            {"client": "{web}", "room_name": "support-1", "participant_identity": "a\x01"},
            400,
            "participant_identity",
        ),
        ({"client": "{web}", "room_name": "support-1", "colour": "red"}, 400, "colour"),
        ({"client": "{web}", "room_name": "support-1", "ttl": 10**9}, 403, "ttl"),
    ],
)
def test_bad_input_is_4xx_naming_the_field(staff_api, web, body, status, field):
    body = {k: web.pk if v == "{web}" else v for k, v in body.items()}

    answer = error_of(mint(staff_api, body), status)

    assert field in answer["detail"], answer
    assert not TokenFact.objects.exists()


def test_a_body_that_is_not_an_object_is_400(staff_api, web):
    assert "non_field_errors" in error_of(mint(staff_api, ["support-1"]), 400)["detail"]


def test_a_disabled_client_is_refused_naming_it(staff_api, web):
    ApiClient.objects.filter(pk=web.pk).update(enabled=False)
    from agents_app.services import ruleset_bump

    ruleset_bump()
    answer = error_of(mint(staff_api, {"client": web.pk, "room_name": "support-1"}), 403)
    assert answer["detail"] == {"client": ["API client 'web' is disabled: its tokens would be refused"]}


def test_room_json_shows_the_ledger_steps_of_the_rooms_dispatches(staff_api, web):
    [dispatch] = token_recorded("support-2", "ann", "support-agent")

    r = staff_api.get(ROOM, {"client": web.pk, "room": "support-2"})

    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["room_name"], body["status"]) == ("support-2", "pending")
    [agent] = body["agents"]
    assert (agent["agent_name"], agent["dispatch_id"], agent["status"]) == (
        "support-agent",
        dispatch.pk,
        "pending",
    )
    assert agent["delivery"] == "token"
    steps = {s["key"]: s["state"] for s in agent["steps"]}
    assert steps == {
        "trigger": "done",
        "requested": "skipped",
        "job_assigned": "waiting",
        "joined": "waiting",
    }
    assert agent["dispatch_url"] == f"/admin/rooms_app/dispatch/{dispatch.pk}/change/"


def test_room_json_of_a_room_the_portal_does_not_know(staff_api, web):
    body = staff_api.get(ROOM, {"client": web.pk, "room": "support-new"}).json()
    assert (body["status"], body["agents"]) == ("unknown", [])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"room": "support-1"}, "client"),
        ({"client": "x", "room": "support-1"}, "client"),
        ({"client": "²", "room": "support-1"}, "client"),
        ({"client": "99999", "room": "support-1"}, "client"),
        ({"client": "{web}"}, "room"),
        ({"client": "{web}", "room": "   "}, "room"),
    ],
)
def test_room_json_bad_input_is_400_naming_the_field(staff_api, web, query, field):
    query = {k: web.pk if v == "{web}" else v for k, v in query.items()}
    assert field in error_of(staff_api.get(ROOM, query), 400)["detail"]


def test_only_staff_with_the_permissions_may_call(web, django_user_model):
    anonymous = APIClient()
    for response in (anonymous.get(ROOM, {"client": web.pk, "room": "support-1"}), mint(anonymous, {})):
        assert error_of(response, 403)["error"] == "forbidden"
    page = anonymous.get(PAGE)
    assert page.status_code == 302 and page["Location"].startswith("/admin/login/")

    user = django_user_model.objects.create_user("pat", password="pw-pat-123", is_staff=False)
    client = APIClient()
    client.force_login(user)
    assert error_of(mint(client, {"client": web.pk, "room_name": "support-1"}), 403)["error"] == "forbidden"
    assert client.get(PAGE).status_code == 302

    user.is_staff = True
    user.save()
    answer = error_of(mint(client, {"client": web.pk, "room_name": "support-1"}), 403)
    assert "rooms_app.view_dispatch" in answer["detail"]
    assert client.get(PAGE).status_code == 403

    user.user_permissions.add(Permission.objects.get(codename="view_dispatch"))
    user = django_user_model.objects.get(pk=user.pk)  # permissions are cached per instance
    client.force_login(user)
    assert client.get(ROOM, {"client": web.pk, "room": "support-1"}).status_code == 200
    assert client.get(PAGE).status_code == 200
    answer = error_of(mint(client, {"client": web.pk, "room_name": "support-1"}), 403)
    assert "agents_app.view_apiclient" in answer["detail"]
    assert not TokenFact.objects.exists()


def test_an_api_key_cannot_mint_under_a_client(web):
    _, key = make_client("other", rooms=["*"])
    keyed = APIClient()
    answer = keyed.post(
        TOKEN, {"client": web.pk, "room_name": "support-1"}, format="json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert error_of(answer, 403)["error"] == "forbidden"


def test_minting_needs_the_csrf_token_of_the_session(admin_user, web):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    answer = error_of(mint(browser, {"client": web.pk, "room_name": "support-1"}), 403)
    assert "CSRF" in json.dumps(answer)


def test_the_page_offers_enabled_clients_and_prefills_the_room(admin_client, web):
    make_client("revoked", rooms=["*"])
    ApiClient.objects.filter(name="revoked").update(enabled=False)

    html = admin_client.get(PAGE, {"room": "support-9"}).content.decode()

    assert 'id="id_room" name="room" class="vTextField" value="support-9"' in html
    assert f'<option value="{web.pk}">web (rooms: support-*)</option>' in html
    assert "revoked" not in html
    # The browser SDK from the portal's own static files, never a CDN.
    assert '<script src="/static/vendor/livekit-client/livekit-client.umd.js"></script>' in html
    assert "https://" not in html.split("<script", 1)[1]


def test_linked_from_the_admin_index_and_each_room(admin_client):
    room = Room.objects.create(name="support 7/a")
    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/test-call/" id="test-call-link"' in index
    page = admin_client.get(f"/admin/rooms_app/room/{room.pk}/change/").content.decode()
    assert 'href="/admin/test-call/?room=support%207/a" id="test-call-link"' in page


def test_the_vendored_sdk_is_the_pinned_package_unchanged():
    record = json.loads((REPO / "static/vendor/livekit-client/VENDORED.json").read_text())
    for name, wanted in record["files"].items():
        data = (REPO / "static/vendor/livekit-client" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == wanted["sha256"], name
    # One version of livekit-client in the project: the page's and the Node SDK tests'.
    pinned = json.loads((REPO / "tests/js/package.json").read_text())["dependencies"]["livekit-client"]
    assert record["version"] == pinned
    assert record["tarball"].endswith(f"/livekit-client-{pinned}.tgz")
    assert "Apache License" in (REPO / "static/vendor/livekit-client/LICENSE").read_text()
