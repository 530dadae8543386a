"""`/metrics`: who may read it, what the token path counts, and sums across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatchportal import metrics
from tests.factories import AgentFactory, RuleFactory, make_client

# Every scrape reads the table sizes from the database.
pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
METRICS_TOKEN = "metrics-token-for-tests-0123456789"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in an exposition; 0 when it is not there (nothing counted yet)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def scrape(client, **extra) -> str:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    return response.content.decode()


# --- access ---------------------------------------------------------------------------------


def test_loopback_reads_metrics_without_a_token(client):
    metrics.webhook_event_record(event="room_started")

    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert sample(response.content.decode(), "dispatchportal_webhook_events_total", event="room_started") >= 1


def test_ipv6_loopback_is_loopback_too(client):
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


def test_other_addresses_are_refused_without_a_token(client):
    response = client.get("/metrics", REMOTE_ADDR="10.1.2.3")

    assert response.status_code == 403
    assert b"METRICS_TOKEN" in response.content


def test_with_a_token_only_the_bearer_reads_from_anywhere(client, settings):
    settings.METRICS_TOKEN = METRICS_TOKEN

    missing = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    wrong = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer nope")
    right = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")

    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert METRICS_TOKEN.encode() not in right.content


def test_openmetrics_when_the_scraper_asks_for_it(client):
    metrics.webhook_event_record(event="room_started")

    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")

    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


def test_only_get(client):
    assert client.post("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 405


# --- what the token path counts -------------------------------------------------------------


@pytest.mark.django_db
def test_tokens_are_counted_by_client_and_outcome_and_rules_by_name(client, api, monkeypatch, settings):
    settings.LIVEKIT_API_SECRET = "metrics-test-secret-long-enough-for-hs256-0123456789"
    # Applying the token's fact is a Celery task; this test is about the counters only.
    monkeypatch.setattr("rooms_app.services.facts._token_facts_apply_soon", lambda: None)
    agent = AgentFactory(agent_name="support-agent")
    RuleFactory(name="support rooms", agent=agent, room_match_value="support-*")
    _, key = make_client("metrics-web", rooms=["support-*"])
    before = scrape(client)

    ok = api.post(
        "/api/v1/token", {"room_name": "support-1"}, format="json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    refused = api.post(
        "/api/v1/token", {"room_name": "sales-1"}, format="json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    anonymous = api.post("/api/v1/token", {"room_name": "support-1"}, format="json")

    assert (ok.status_code, refused.status_code, anonymous.status_code) == (201, 403, 401)
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    tokens = "dispatchportal_tokens_minted_total"
    assert delta(tokens, client="metrics-web", outcome="ok") == 1
    assert delta(tokens, client="metrics-web", outcome="forbidden") == 1
    assert delta(tokens, client="-", outcome="unauthenticated") == 1
    assert delta("dispatchportal_rule_matches_total", rule="support rooms") == 1


def test_time_to_join_lands_in_the_histogram(client):
    from datetime import UTC, datetime, timedelta

    agent = f"agent-{uuid.uuid4().hex[:8]}"
    started = datetime(2026, 1, 1, tzinfo=UTC)

    metrics.time_to_join_observe(agent=agent, started=started, joined=started + timedelta(seconds=1.5))
    metrics.time_to_join_observe(agent=agent, started=None, joined=started)  # unknown: skipped

    text = scrape(client)
    histogram = "dispatchportal_dispatch_time_to_join_seconds"
    assert sample(text, histogram + "_count", agent=agent) == 1
    assert sample(text, histogram + "_bucket", agent=agent, le="1.0") == 0
    assert sample(text, histogram + "_bucket", agent=agent, le="2.0") == 1


# --- several processes ----------------------------------------------------------------------

_INCREMENT = """
import django, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dispatchportal.settings")
django.setup()
from dispatchportal import metrics
for _ in range(3):
    metrics.dispatch_status_record(status="agent_joined", agent=sys.argv[1])
"""


def test_counts_of_other_processes_are_summed(client):
    """What several gunicorn workers and Celery processes do: each writes its own file in the
    shared directory, and one scrape sums them all."""
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", _INCREMENT, agent], env=env, cwd=ROOT, check=True, timeout=60)

    text = scrape(client)

    assert sample(text, "dispatchportal_dispatches_total", status="agent_joined", agent=agent) == 6
