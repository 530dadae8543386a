"""Schemathesis against `/api/schema/`, in-process over WSGI, every operation, with a client
key: no 5xx, every status and body as the schema documents it, schema-invalid input refused
and schema-valid input not refused as invalid (the schema and the API agree). Derandomized
with a fixed budget per operation."""

from __future__ import annotations

import os
from collections import Counter

import hypothesis
import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck
from schemathesis import GenerationMode
from schemathesis import checks as sc
from schemathesis.specs.openapi import checks as oc

from dispatchportal.parsers import NUL_MESSAGE
from dispatchportal.wsgi import application
from tests.factories import AgentFactory, RuleFactory, make_client

pytestmark = pytest.mark.django_db
EXAMPLES = int(os.environ.get("SCHEMA_EXAMPLES", "40"))
FIGURES: Counter = Counter()


@pytest.fixture
def api_schema():
    """The schema, and requests served in-process by the WSGI app. Like Django's test
    client, requests here do not close the test's database connection."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def key(db):
    RuleFactory(name="everything", agent=AgentFactory(agent_name="helper"), room_match_value="*")
    # A room-name template: without one, a token request without room_name is a 400 that no
    # schema can describe (it depends on the client), tested in tests/agents_app.
    _, key = make_client(
        "schema",
        rooms=["*"],
        agent_names=["helper"],
        client_agents=True,
        rate_limit_per_minute=10**9,
        room_name_template="room-{{uuid}}",
    )
    return key


UNSAYABLE = {
    "draft_rule.agent_name",
    "draft_rule.room_match_value",
    "draft_rule.identity_match_value",
    "draft_rule.attribute_conditions",
    "draft_rule.metadata_template",
    "participant_attributes",
}

CHECKS = [
    sc.not_a_server_error,
    oc.status_code_conformance,
    oc.content_type_conformance,
    oc.response_schema_conformance,
    oc.negative_data_rejection,
]


def operation_agrees(operation, mode, key: str) -> list[str]:
    """Run `EXAMPLES` generated cases of one operation; the failures, described."""
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {key}"}

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    def run(case):
        response = case.call(headers=headers)
        FIGURES["requests"] += 1
        FIGURES[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
            # Schema-valid input is never refused as malformed: a 400 here means the schema lies.
            # Except what no schema can say, each named: a draft rule naming an agent that does
            # not exist (or that the client may not name); a match value its kind refuses (an
            # empty exact/glob/regex, a regex that does not compile or backtracks, a pattern
            # reaching the canary rooms); a metadata template with an unknown placeholder.
            if mode is GenerationMode.POSITIVE and response.status_code == 400:
                detail = response.json()["detail"]
                # And OpenAPI 3.0 has no `propertyNames`: "attribute names not empty" is only
                # in the schema's description, and no object key may hold a NUL (the parser
                # refuses it in every key, naming the key's path).
                assert isinstance(detail, dict), "valid input refused"
                refused = {
                    f for f, messages in detail.items() if f not in UNSAYABLE and messages != [NUL_MESSAGE]
                }
                assert not refused, f"valid input refused: {sorted(refused)}"
        except (AssertionError, Exception) as exc:  # noqa: BLE001  every check's failure, collected
            detail = f"{operation.label} {mode.value}: {str(exc)[:300]} <- {case.path_parameters} {case.query} {case.body!r:.300}"
            failures.append(f"{detail} -> {response.status_code} {response.text[:200]}")

    run()
    return failures


def test_every_operation_agrees_with_the_schema(api_schema, key):
    failures: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += operation_agrees(operation, mode, key)
    assert not failures, "\n".join(failures[:15])


def test_schema_figures(capsys):
    if FIGURES:
        with capsys.disabled():
            print(f"\n[schemathesis] {dict(sorted(FIGURES.items(), key=str))}")
