"""Fuzz of the token endpoint's scope: random bodies (hostile strings, lone surrogates, wrong
types, nesting, other clients' rooms and agents, grants and TTLs over the ceiling). Every
answer is JSON and below 500; every minted token, decoded with livekit's TokenVerifier,
stays inside the client's rooms, agents, grant ceiling and TTL, and carries only what
LiveKit can parse. Derandomized with a fixed budget, so CI runs the same bodies each time."""

from __future__ import annotations

import json
import os
from collections import Counter

import hypothesis
import jwt
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from livekit.api import TokenVerifier

from dispatchportal.parsers import text_problem
from dispatchportal.serializers import name_problem
from tests.factories import AgentFactory, RuleFactory, make_client

pytestmark = pytest.mark.django_db
URL = "/api/v1/token"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "600"))
MAX_TTL_S = 3600
ALLOWED_AGENTS = {"helper", "fuzz-rule-agent"}  # the client's own, and its rooms' rule's
FIGURES: Counter = Counter()

HOSTILE = [
    "\udc80",
    "a\ud800b",
    "\x00",
    "fuzz-\n1",
    " ",
    "fuzz-" + "x" * 300,
    "other-1",
    "*",
    "fuzz-*",
    "../fuzz-1",
    "fuzz-1\u202e",
    "💥",
    "{{room_name}}",
]
strings = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec=None, categories=["Cs", "Cc", "Zs", "L"]), max_size=6),
    st.builds(lambda s: "fuzz-" + s, st.text(max_size=12)),
)
scalars = st.one_of(
    strings, st.integers(-(2**70), 2**70), st.booleans(), st.none(), st.floats(allow_nan=False)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=2),
    max_leaves=4,
)
names = ["helper", "other-agent", "disabled-agent", "fuzz-rule-agent", "other-rule-agent", ""]
plain = st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True)
grant_names = ["can_publish", "can_subscribe", "can_publish_data", "can_update_own_metadata", "hidden"]

# Well-formed bodies a client could send, some asking for more than the client may have.
plausible = st.fixed_dictionaries(
    {"room_name": st.sampled_from(["fuzz-1", "fuzz-2", "other-1"]) | plain.map(lambda s: "fuzz-" + s)},
    optional={
        "participant_identity": plain,
        "participant_name": st.text(max_size=20),
        "participant_metadata": st.text(max_size=40),
        "participant_attributes": st.dictionaries(plain, st.text(max_size=10), max_size=3),
        "room_config": st.fixed_dictionaries(
            {
                "agents": st.lists(
                    st.fixed_dictionaries(
                        {"agent_name": st.sampled_from(names)}, optional={"metadata": st.text(max_size=20)}
                    ),
                    max_size=2,
                )
            }
        ),
        "ttl": st.integers(60, 2 * MAX_TTL_S),
        "grants": st.dictionaries(st.sampled_from(grant_names), st.booleans(), max_size=3),
    },
)
# Anything: hostile strings (lone surrogates, control characters, other clients' rooms),
# wrong types, unknown fields, nesting.
hostile = st.fixed_dictionaries(
    {},
    optional={
        "room_name": st.sampled_from(["fuzz-1", "other-1"]) | strings | values,
        "participant_identity": strings | values,
        "participant_name": strings | values,
        "participant_metadata": strings | values,
        "participant_attributes": st.dictionaries(strings, strings, max_size=2) | values,
        "room_config": st.fixed_dictionaries(
            {},
            optional={
                "agents": st.lists(
                    st.fixed_dictionaries(
                        {"agent_name": st.sampled_from(names) | strings},
                        optional={"metadata": strings | values, "deployment": strings, "extra": values},
                    ),
                    max_size=2,
                )
                | values
            },
        )
        | st.dictionaries(strings, values, max_size=2),
        "ttl": st.integers(-10, 10**6) | values,
        "grants": st.dictionaries(st.sampled_from([*grant_names, "x"]), st.booleans() | values, max_size=3)
        | values,
        "unknown": values,
    },
)
bodies = plausible | plausible | hostile | values


@pytest.fixture
def fuzz_key(settings):
    settings.LIVEKIT_API_SECRET = "fuzz-secret-long-enough-for-hs256-0123456789abcdef"
    AgentFactory(agent_name="helper")
    AgentFactory(agent_name="other-agent")
    AgentFactory(agent_name="disabled-agent", enabled=False)
    RuleFactory(name="fuzz rule", agent=AgentFactory(agent_name="fuzz-rule-agent"), room_match_value="fuzz-*")
    RuleFactory(
        name="other rule", agent=AgentFactory(agent_name="other-rule-agent"), room_match_value="other-*"
    )
    _, key = make_client(
        "fuzz",
        rooms=["fuzz-*"],
        agent_names=["helper", "disabled-agent"],
        client_agents=True,
        max_ttl_s=MAX_TTL_S,
        can_publish=False,
        rate_limit_per_minute=10**9,
    )
    return key


def assert_in_scope(token: str, secret_settings) -> None:
    key, secret = secret_settings.LIVEKIT_API_KEY, secret_settings.LIVEKIT_API_SECRET
    claims = TokenVerifier(key, secret).verify(token)
    raw = jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})
    room = claims.video.room
    assert room.startswith("fuzz-") and len(room) <= 256 and name_problem(room) is None, room
    assert claims.identity and len(claims.identity) <= 256 and name_problem(claims.identity) is None
    assert claims.video.room_join is True
    assert raw["video"].get("canPublish") is not True  # ceiling: can_publish false
    assert raw["video"].get("canUpdateOwnMetadata") is not True and raw["video"].get("hidden") is not True
    assert 0 < raw["exp"] - raw["nbf"] <= MAX_TTL_S
    agents = {a.get("agentName", "") for a in raw.get("roomConfig", {}).get("agents", [])}
    assert agents <= ALLOWED_AGENTS, agents
    assert set(raw.get("roomConfig", {})) <= {"agents"}
    # Nothing LiveKit's parsers would refuse: every string valid UTF-8.
    for text in [claims.name, claims.metadata, *claims.attributes.keys(), *claims.attributes.values()]:
        assert text_problem(text) is None


@hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(body=bodies)
def test_fuzzed_bodies_never_5xx_and_tokens_stay_in_scope(api, settings, fuzz_key, body):
    response = api.generic(
        "POST",
        URL,
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {fuzz_key}",
    )
    FIGURES["requests"] += 1
    FIGURES[response.status_code] += 1
    assert response.status_code < 500, (body, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    answer = response.json()
    if response.status_code == 201:
        assert_in_scope(answer["participant_token"], settings)
    else:
        assert set(answer) == {"error", "detail"} and "participant_token" not in answer


def test_fuzz_figures(capsys):
    """Prints what the fuzz above did (runs after it: pytest keeps file order)."""
    if FIGURES:
        with capsys.disabled():
            print(f"\n[token fuzz] {dict(sorted(FIGURES.items(), key=str))}")
