"""export_rules / import_rules round trip and create_api_client."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from agents_app.models import Agent, DispatchRule
from agents_app.selectors import config_get, key_digest
from tests.factories import AgentFactory, RuleFactory

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def ruleset():
    generic = AgentFactory(agent_name="generic", default_metadata={"v": 1})
    AgentFactory(agent_name="interviewer", fallback=generic, join_deadline_s=20, max_attempts=2)
    RuleFactory(
        name="interviews",
        agent=Agent.objects.get(agent_name="interviewer"),
        room_match_kind="regex",
        room_match_value=r"interview-(?P<id>\d+)",
        identity_match_kind="glob",
        identity_match_value="cand-*",
        attribute_conditions={"lang": {"kind": "exact", "value": "en"}},
        metadata_template={"id": "{{match.id}}"},
        delivery="explicit",
        stop=True,
        priority=5,
    )


def test_export_then_import_into_an_empty_database_round_trips(ruleset, tmp_path):
    exported = json.loads(run("export_rules"))
    assert exported["rules"][0] == {
        "name": "interviews",
        "enabled": True,
        "priority": 5,
        "room": {"kind": "regex", "value": r"interview-(?P<id>\d+)"},
        "identity": {"kind": "glob", "value": "cand-*"},
        "attributes": {"lang": {"kind": "exact", "value": "en"}},
        "agent": "interviewer",
        "metadata_template": {"id": "{{match.id}}"},
        "delivery": "explicit",
        "stop": True,
    }
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(exported))
    DispatchRule.objects.all().delete()
    Agent.objects.all().delete()
    out = run("import_rules", str(path))
    assert "+ create agent 'interviewer'" in out and "+ create dispatch rule 'interviews'" in out
    assert json.loads(run("export_rules")) == exported
    assert run("import_rules", str(path)).strip() == "no changes"


def test_dry_run_prints_the_diff_and_changes_nothing(ruleset, tmp_path):
    data = json.loads(run("export_rules"))
    data["rules"][0]["priority"] = 7
    data["rules"].append({"name": "new", "room": {"kind": "glob", "value": "x-*"}, "agent": "generic"})
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(data))
    out = run("import_rules", str(path), "--dry-run")
    assert "~ update dispatch rule 'interviews': priority: 5 -> 7" in out
    assert "+ create dispatch rule 'new'" in out
    assert "would change 2 item(s)" in out
    assert DispatchRule.objects.get(name="interviews").priority == 5
    assert not DispatchRule.objects.filter(name="new").exists()


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d["rules"][0].update(agent="ghost"), "unknown agent 'ghost'"),
        (lambda d: d["rules"][0]["room"].update(value="(a+)+"), "catastrophically"),
        (lambda d: d["agents"][0].update(fallback="ghost"), "unknown fallback"),
        (lambda d: d["rules"][0].pop("room"), "missing or malformed"),
    ],
)
def test_invalid_files_change_nothing(ruleset, tmp_path, mutate, message):
    data = json.loads(run("export_rules"))
    data["rules"].append({"name": "fresh", "room": {"kind": "glob", "value": "y-*"}, "agent": "generic"})
    mutate(data)
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CommandError, match=message):
        run("import_rules", str(path))
    assert not DispatchRule.objects.filter(name="fresh").exists()


def test_create_api_client_prints_only_a_working_key():
    AgentFactory(agent_name="interviewer")
    out = run(
        "create_api_client",
        "web",
        "--rooms",
        "interview-*",
        "--rooms",
        "support-*",
        "--agents",
        "interviewer",
        "--client-agents",
        "--max-ttl",
        "600",
    )
    key = out.strip()
    assert key.startswith("dpk_") and "\n" not in key
    scope = config_get().clients[key_digest(key)]
    assert (
        scope.room_allowed("support-1") and scope.room_allowed("interview-1") and not scope.room_allowed("x")
    )
    assert scope.agent_names == {"interviewer"} and scope.client_agents and scope.max_ttl_s == 600
    with pytest.raises(CommandError, match="unknown agents: ghost"):
        run("create_api_client", "other", "--agents", "ghost")
