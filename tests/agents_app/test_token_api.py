"""POST /api/v1/token: LiveKit's standard token endpoint, scoped by the caller's API key."""

import base64
import json

import pytest
from django.db import connection
from livekit.api import TokenVerifier

from agents_app.models import ApiClient, DispatchRule
from rooms_app.models import TokenFact
from tests.factories import AgentFactory, RuleFactory, make_client

pytestmark = pytest.mark.django_db
URL = "/api/v1/token"


def post(api, key, body, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    if isinstance(body, (dict, list)):
        return api.post(URL, body, format="json", **headers, **extra)
    return api.post(URL, body, content_type="application/json", **headers, **extra)


def claims_of(response, settings):
    return TokenVerifier(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET).verify(
        response.json()["participant_token"]
    )


def assert_error(response, status, error, field=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == error
    if field:
        detail = json.dumps(body["detail"])
        assert field in detail, body
    assert "participant_token" not in body


@pytest.fixture
def setup():
    interviewer = AgentFactory(agent_name="interviewer", default_metadata={"lang": "en"})
    notes = AgentFactory(agent_name="note-taker")
    RuleFactory(
        name="interviews",
        agent=interviewer,
        room_match_kind="regex",
        room_match_value=r"interview-(?P<cid>\d+)",
        metadata_template={"candidate": "{{match.cid}}", "who": "{{participant_identity}}"},
        priority=10,
    )
    RuleFactory(
        name="notes everywhere", agent=notes, room_match_kind="glob", room_match_value="*", priority=20
    )
    client, key = make_client(
        "web", rooms=["interview-*", "demo-*"], agent_names=["note-taker"], client_agents=True
    )
    return client, key


def test_mints_a_verifiable_token_with_rule_agents(api, settings, setup):
    _, key = setup
    r = post(
        api,
        key,
        {
            "room_name": "interview-42",
            "participant_identity": "cand-1",
            "participant_name": "Ann",
            "participant_metadata": '{"cv": 1}',
            "participant_attributes": {"tier": "gold"},
        },
    )
    assert r.status_code == 201
    body = r.json()
    assert body["server_url"] == "wss://livekit.example.com"
    assert (body["room_name"], body["participant_identity"]) == ("interview-42", "cand-1")
    claims = claims_of(r, settings)
    assert claims.identity == "cand-1" and claims.name == "Ann" and claims.metadata == '{"cv": 1}'
    assert claims.attributes == {"tier": "gold"}
    assert claims.video.room_join and claims.video.room == "interview-42"
    assert [(a.agent_name, json.loads(a.metadata or "{}")) for a in claims.room_config.agents] == [
        ("interviewer", {"lang": "en", "candidate": "42", "who": "cand-1"}),
        ("note-taker", {}),
    ]
    applied = [{**a, "metadata": json.loads(a["metadata"] or "{}")} for a in body["dispatch"]["agents"]]
    assert applied == [
        {
            "agent_name": "interviewer",
            "rule": "interviews",
            "delivery": "token",
            "metadata": {"lang": "en", "candidate": "42", "who": "cand-1"},
        },
        {"agent_name": "note-taker", "rule": "notes everywhere", "delivery": "token", "metadata": {}},
    ]


def test_missing_identity_is_generated_and_missing_room_uses_the_template(api, settings, setup):
    client, key = setup
    r = post(api, key, {"room_name": "demo-1"})
    assert r.status_code == 201 and r.json()["participant_identity"].startswith("user-")
    assert_error(post(api, key, {}), 400, "invalid", "room_name")
    ApiClient.objects.filter(pk=client.pk).update(room_name_template="demo-{{uuid}}")
    from agents_app.services import ruleset_bump

    ruleset_bump()
    r = post(api, key, {"participant_identity": "x"})
    assert r.status_code == 201 and r.json()["room_name"].startswith("demo-")
    assert claims_of(r, settings).video.room == r.json()["room_name"]


def test_explicit_delivery_rules_are_reported_not_put_in_the_token(api, settings, setup):
    _, key = setup
    RuleFactory(
        name="sip", agent=AgentFactory(agent_name="phone"), room_match_value="demo-*", delivery="explicit"
    )
    r = post(api, key, {"room_name": "demo-1", "participant_identity": "u"})
    agents = {a["agent_name"]: a["delivery"] for a in r.json()["dispatch"]["agents"]}
    assert agents == {"note-taker": "token", "phone": "explicit"}
    assert [a.agent_name for a in claims_of(r, settings).room_config.agents] == ["note-taker"]


def test_client_requested_agents_within_scope(api, settings, setup):
    _, key = setup
    DispatchRule.objects.filter(name="notes everywhere").update(enabled=False)
    from agents_app.services import ruleset_bump

    ruleset_bump()
    body = {
        "room_name": "demo-1",
        "participant_identity": "u",
        "room_config": {"agents": [{"agent_name": "note-taker", "metadata": '{"m":1}'}]},
    }
    r = post(api, key, body)
    assert r.status_code == 201
    assert r.json()["dispatch"]["agents"] == [
        {"agent_name": "note-taker", "rule": "client", "metadata": '{"m":1}', "delivery": "token"}
    ]
    assert [(a.agent_name, a.metadata) for a in claims_of(r, settings).room_config.agents] == [
        ("note-taker", '{"m":1}')
    ]


@pytest.mark.parametrize(
    "body,field",
    [
        (
            {"room_name": "interview-1", "room_config": {"agents": [{"agent_name": "interviewer"}]}},
            "room_config.agents",
        ),
        ({"room_name": "interview-1", "room_config": {"empty_timeout": 5}}, "room_config.empty_timeout"),
        ({"room_name": "other-room"}, "room_name"),
        ({"room_name": "interview-1", "ttl": 999999}, "ttl"),
        ({"room_name": "interview-1", "grants": {"hidden": True}}, "grants.hidden"),
    ],
)
def test_out_of_scope_requests_are_403(api, setup, body, field):
    _, key = setup
    assert_error(post(api, key, body), 403, "forbidden", field)


def test_client_without_client_agents_may_not_request_agents(api):
    AgentFactory(agent_name="a")
    _, key = make_client("no-agents", rooms=["*"], agent_names=["a"], client_agents=False)
    assert_error(
        post(api, key, {"room_name": "r", "room_config": {"agents": [{"agent_name": "a"}]}}),
        403,
        "forbidden",
        "room_config.agents",
    )


def test_disabled_agent_is_never_dispatched(api, setup):
    _, key = setup
    from agents_app.models import Agent

    note = Agent.objects.get(agent_name="note-taker")
    note.enabled = False
    note.save()
    r = post(api, key, {"room_name": "interview-1"})
    assert [a["agent_name"] for a in r.json()["dispatch"]["agents"]] == ["interviewer"]
    body = {"room_name": "interview-1", "room_config": {"agents": [{"agent_name": "note-taker"}]}}
    assert_error(post(api, key, body), 403, "forbidden", "disabled")


def test_grants_follow_the_ceiling(api, settings):
    client, key = make_client("viewer", rooms=["*"], can_publish=False, hidden=True)
    claims = claims_of(post(api, key, {"room_name": "r"}), settings)
    assert (claims.video.can_publish, claims.video.can_subscribe, claims.video.hidden) == (False, True, None)
    claims = claims_of(
        post(api, key, {"room_name": "r", "grants": {"hidden": True, "can_subscribe": False}}), settings
    )
    assert (claims.video.hidden, claims.video.can_subscribe) == (True, False)
    assert_error(
        post(api, key, {"room_name": "r", "grants": {"can_publish": True}}),
        403,
        "forbidden",
        "grants.can_publish",
    )


def test_ttl_defaults_to_the_clients_max_and_may_be_shortened(api, settings):
    _, key = make_client("short", rooms=["*"], max_ttl_s=600)

    def lifetime(body):
        token = post(api, key, body).json()["participant_token"]
        payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        return payload["exp"] - payload["nbf"]

    assert lifetime({"room_name": "r"}) == 600
    assert lifetime({"room_name": "r", "ttl": 120}) == 120


@pytest.mark.parametrize(
    "header,detail",
    [
        (None, "not provided"),
        ("Bearer dpk_unknown", "Unknown API key"),
        ("Basic abc", "Bearer"),
    ],
)
def test_authentication_errors_are_401(api, setup, header, detail):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    r = api.post(URL, {"room_name": "interview-1"}, format="json", **extra)
    assert_error(r, 401, "unauthenticated")
    assert detail in r.json()["detail"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_client_is_401_at_once(api, setup):
    client, key = setup
    assert post(api, key, {"room_name": "interview-1"}).status_code == 201
    client.enabled = False
    client.save()
    assert_error(post(api, key, {"room_name": "interview-1"}), 401, "unauthenticated", "disabled")


def test_staff_session_without_key_is_refused(staff_api, setup):
    """Tokens are minted for API clients only: a logged-in admin still needs a key."""
    assert_error(staff_api.post(URL, {"room_name": "interview-1"}, format="json"), 401, "unauthenticated")


@pytest.mark.parametrize(
    "body,error,field",
    [
        ("{not json", "malformed_json", None),
        ("[1, 2]", "invalid", "non_field_errors"),
        ({"room_name": 7}, "invalid", "room_name"),
        ({"room_name": "interview-1", "participant_identity": ["x"]}, "invalid", "participant_identity"),
        (
            {"room_name": "interview-1", "participant_attributes": {"a": 1}},
            "invalid",
            "participant_attributes",
        ),
        ({"room_name": "interview-1", "participant_attributes": "x"}, "invalid", "participant_attributes"),
        ({"room_name": "interview-\n1"}, "invalid", "room_name"),
        ({"room_name": "interview-" + "1" * 300}, "invalid", "room_name"),
        ({"room_name": "interview-1", "participant_identity": "x" * 257}, "invalid", "participant_identity"),
        (
            {"room_name": "interview-1", "participant_metadata": "x" * 64_001},
            "invalid",
            "participant_metadata",
        ),
        (
            {"room_name": "interview-1", "participant_attributes": {"k": "v" * 64_001}},
            "invalid",
            "participant_attributes",
        ),
        ({"room_name": "interview-1", "room": "x"}, "invalid", "room"),
        ({"room_name": "interview-1", "room_config": {"agents": [{"agentName": "x"}]}}, "invalid", "agents"),
        ({"room_name": "interview-1", "room_config": "x"}, "invalid", "room_config"),
        ({"room_name": "interview-1", "ttl": "long"}, "invalid", "ttl"),
    ],
)
def test_bad_input_is_400_naming_the_field(api, setup, body, error, field):
    _, key = setup
    assert_error(post(api, key, body), 400, error, field)


def test_wrong_method_is_405(api, setup):
    _, key = setup
    for r in (api.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}"), api.put(URL, {}, format="json")):
        assert_error(r, 405, "method_not_allowed")
        assert r.headers["Allow"] == "POST, OPTIONS"
    assert not TokenFact.objects.exists()


def test_options_names_the_methods_without_a_key(api):
    """A preflight carries no key: it learns the methods and nothing else."""
    r = api.options(URL)
    assert r.status_code == 200
    assert r.headers["Allow"] == "POST, OPTIONS"
    assert r.content == b""


def test_answers_are_the_apis_compact_json(api, setup):
    """The token endpoint renders with the same renderer as the rest of the API: compact
    `application/json`, errors included."""
    _, key = setup
    r = post(api, key, {"room_name": "interview-1"})
    assert r.headers["Content-Type"] == "application/json"
    assert b'"room_name":"interview-1"' in r.content
    refused = post(api, key, {"room_name": "elsewhere-1"})
    assert refused.headers["Content-Type"] == "application/json"
    assert refused.content.startswith(b'{"error":"forbidden","detail":')


def test_rate_limit_is_429_with_retry_after(api):
    _, key = make_client("slow", rooms=["*"], rate_limit_per_minute=3)
    statuses = [post(api, key, {"room_name": "r"}).status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]
    r = post(api, key, {"room_name": "r"})
    assert_error(r, 429, "rate_limited")
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # another client is counted apart
    _, other = make_client("other", rooms=["*"], rate_limit_per_minute=3)
    assert post(api, other, {"room_name": "r"}).status_code == 201


def test_rule_changes_apply_to_the_next_token(api, settings, setup):
    _, key = setup
    rule = DispatchRule.objects.get(name="interviews")
    assert "interviewer" in [
        a["agent_name"] for a in post(api, key, {"room_name": "interview-1"}).json()["dispatch"]["agents"]
    ]
    rule.enabled = False
    rule.save()
    assert "interviewer" not in [
        a["agent_name"] for a in post(api, key, {"room_name": "interview-1"}).json()["dispatch"]["agents"]
    ]


def test_token_path_makes_one_insert_once_warm(api, setup, django_assert_num_queries):
    """Once warm, a token that carries agents costs one query: the INSERT of its fact
    (issue 9 lifted the old "no database write" rule: the record comes before the answer)."""
    _, key = setup
    for n in range(5):  # warms the per-process rule cache, and psycopg's count of the INSERT
        post(api, key, {"room_name": "interview-1", "participant_identity": f"warm-{n}"})
    with django_assert_num_queries(1) as queries:
        r = post(api, key, {"room_name": "interview-2", "participant_identity": "u"})
    assert r.status_code == 201 and r.json()["dispatch"]["agents"]
    assert TokenFact.objects.filter(room_name="interview-2", participant_identity="u").exists()
    if connection.vendor == "postgresql":
        # ... and a statement PostgreSQL prepared once for this connection (server-side binding,
        # prepared after five runs), not one it parses and plans again on every token.
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [row[0] for row in cursor.fetchall()]
        assert [s for s in prepared if s.startswith('INSERT INTO "rooms_app_tokenfact"')], prepared
    else:
        assert queries.captured_queries[0]["sql"].startswith('INSERT INTO "rooms_app_tokenfact"')


def test_nothing_is_written_on_errors(api, setup, django_assert_num_queries):
    _, key = setup
    post(api, key, {"room_name": "interview-1"})
    with django_assert_num_queries(0):
        assert post(api, key, {"room_name": "elsewhere"}).status_code == 403


def test_the_schema_describes_exactly_what_the_validator_accepts():
    from agents_app import token_request
    from agents_app.apis import AgentRequestSerializer, GrantsSerializer, TokenApiSchema

    assert set(TokenApiSchema.InputSerializer().fields) == set(token_request.FIELDS)
    assert set(AgentRequestSerializer().fields) == set(token_request.AGENT_FIELDS)
    assert set(GrantsSerializer().fields) == set(token_request.GRANT_FIELDS)


def test_a_requested_deployment_reaches_the_token(api, settings, setup):
    """livekit-client's TokenSource sends `deployment` with its agent (LiveKit Cloud)."""
    _, key = setup
    DispatchRule.objects.filter(name="notes everywhere").delete()
    body = {
        "room_name": "demo-1",
        "room_config": {"agents": [{"agent_name": "note-taker", "metadata": "", "deployment": "eu-prod"}]},
    }
    r = post(api, key, body)
    assert r.status_code == 201, r.content
    decoded = json.loads(base64.urlsafe_b64decode(r.json()["participant_token"].split(".")[1] + "=="))
    assert decoded["roomConfig"]["agents"] == [{"agentName": "note-taker", "deployment": "eu-prod"}]


def test_a_body_that_is_not_json_is_415(api, setup):
    _, key = setup
    r = api.post(
        URL,
        "room_name=x",
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert_error(r, 415, "unsupported_media_type")


@pytest.mark.parametrize("name", [{}, 5, None, ["x"], "r" * 257])
def test_room_config_name_must_be_the_string_the_schema_documents(api, setup, name):
    _, key = setup

    answer = post(api, key, {"room_name": "interview-1", "room_config": {"name": name}})

    assert_error(answer, 400, "invalid")
    assert list(answer.json()["detail"]["room_config"]) == ["name"]
    assert not TokenFact.objects.exists()


def test_room_config_name_is_accepted_and_ignored(api, setup, settings):
    _, key = setup

    answer = post(api, key, {"room_name": "interview-1", "room_config": {"name": "elsewhere"}})

    assert answer.status_code == 201
    assert claims_of(answer, settings).video.room == "interview-1"
