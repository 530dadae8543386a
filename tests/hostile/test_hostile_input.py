"""Hostile but well-formed input on every public endpoint: a JSON 4xx naming the field,
never a 5xx or an HTML page, and nothing minted or written."""

import json

import pytest

from agents_app.models import ApiClient
from rooms_app.models import Dispatch, Room
from tests.factories import AgentFactory, RuleFactory, make_client

pytestmark = pytest.mark.django_db

DEEP = "[" * 5000 + "]" * 5000  # 10 KB, valid JSON, deeper than Python's parser can recurse
SURROGATE = '"\\udc80"'  # valid JSON; a lone UTF-16 surrogate UTF-8 cannot encode
ENDPOINTS = ["/api/v1/token", "/api/v1/rules/explain", "/api/v1/dispatches"]


@pytest.fixture
def key():
    agent = AgentFactory(agent_name="helper")
    RuleFactory(name="support", agent=agent, room_match_value="support-*")
    _, key = make_client("web", rooms=["support-*"], agent_names=["helper"], client_agents=True)
    return key


def send(api, url, key, raw: str):
    return api.generic("POST", url, raw, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def error_of(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    return response.json()


def nothing_written():
    return not Room.objects.exists() and not Dispatch.objects.exists()


@pytest.mark.parametrize("url", ENDPOINTS)
def test_deep_nesting_is_a_json_400(api, key, url):
    body = error_of(send(api, url, key, DEEP), 400)
    assert body["error"] == "malformed_json" and "Nested deeper" in body["detail"]
    # parseable but deeper than any body needs: 400 naming the field
    nested = '{"room_name": ' + "[" * 100 + "]" * 100 + "}"
    body = error_of(send(api, url, key, nested), 400)
    assert "room_name" in body["detail"]
    assert nothing_written()


@pytest.mark.parametrize(
    "template,field",
    [
        ('{"room_name": %s}', "room_name"),
        ('{"room_name": "support-1", "participant_identity": %s}', "participant_identity"),
        ('{"room_name": "support-1", "participant_name": %s}', "participant_name"),
        ('{"room_name": "support-1", "participant_metadata": %s}', "participant_metadata"),
        ('{"room_name": "support-1", "participant_attributes": {"k": %s}}', "participant_attributes.k"),
        (
            '{"room_name": "support-1", "participant_attributes": {%s: "v"}}',
            "participant_attributes.\\\\udc80",
        ),
        (
            '{"room_name": "support-1", "room_config": {"agents": [{"agent_name": "helper", "metadata": %s}]}}',
            "room_config.agents.0.metadata",
        ),
        ('{"room_name": "elsewhere", "participant_name": %s}', "participant_name"),  # would be a 403
        ("{%s: 1}", "\\\\udc80"),  # an unknown field whose name cannot be echoed as is
    ],
)
def test_lone_surrogates_are_refused_naming_the_field(api, key, template, field):
    r = send(api, "/api/v1/token", key, template % SURROGATE)
    body = error_of(r, 400)
    assert body["error"] == "invalid"
    assert field in json.dumps(body["detail"]), body
    assert "participant_token" not in body


@pytest.mark.parametrize("url", ["/api/v1/rules/explain", "/api/v1/dispatches"])
def test_lone_surrogates_on_the_other_endpoints(api, key, url):
    body = error_of(send(api, url, key, '{"room_name": "support-1", "agent_name": ' + SURROGATE + "}"), 400)
    assert list(body["detail"]) == ["agent_name"]
    assert nothing_written()


def test_nan_and_infinity_are_not_json(api, key):
    body = error_of(send(api, "/api/v1/token", key, '{"room_name": "support-1", "ttl": NaN}'), 400)
    assert body["error"] == "malformed_json"


@pytest.mark.parametrize("method", ["get", "delete"])
@pytest.mark.parametrize("raw", ["abc", "-1", "0", "1.5", "99999999999999999999", "%C2%B2"])
def test_a_dispatch_id_that_is_not_one_is_a_json_404(api, key, method, raw):
    r = getattr(api, method)(f"/api/v1/dispatches/{raw}", HTTP_AUTHORIZATION=f"Bearer {key}")
    body = error_of(r, 404)
    assert body["error"] == "not_found" and "dispatch_id" in body["detail"]


def test_an_unknown_api_path_is_a_json_404(api, key):
    body = error_of(api.get("/api/v1/nothing-here", HTTP_AUTHORIZATION=f"Bearer {key}"), 404)
    assert body["error"] == "not_found"


def test_the_key_is_unchanged_by_hostile_input(api, key):
    before = list(ApiClient.objects.values_list("pk", "enabled"))
    send(api, "/api/v1/token", key, DEEP)
    send(api, "/api/v1/token", key, '{"room_name": ' + SURROGATE + "}")
    assert list(ApiClient.objects.values_list("pk", "enabled")) == before


def test_an_error_body_with_a_lone_surrogate_still_renders():
    """Belt and braces: should a surrogate ever reach a response (not through a JSON body,
    which refuses it), the answer is escaped JSON, not a 500."""
    from dispatchportal.renderers import JSONRenderer

    rendered = JSONRenderer().render({"error": "forbidden", "detail": {"room_name": ["room '\udc80'"]}})
    assert json.loads(rendered)["detail"]["room_name"] == ["room '\udc80'"]
