"""Rules as files: export the rule set as JSON and import it elsewhere, idempotent by name.

Used by `manage.py export_rules` / `import_rules` to promote a rule set from staging to
production. Import validates everything before writing anything."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction

from .models import Agent, DispatchRule
from .services import ruleset_bump

AGENT_FIELDS = ("display_name", "enabled", "default_metadata", "join_deadline_s", "max_attempts")


class ImportError_(ValueError):
    """The file is not a valid rule set; the message names the item and field."""


def rules_export() -> dict[str, Any]:
    agents = Agent.objects.select_related("fallback").order_by("agent_name")
    rules = DispatchRule.objects.select_related("agent").order_by("priority", "name")
    return {
        "agents": [
            {
                "agent_name": a.agent_name,
                **{f: getattr(a, f) for f in AGENT_FIELDS},
                "fallback": a.fallback.agent_name if a.fallback else None,
            }
            for a in agents
        ],
        "rules": [_rule_out(r) for r in rules],
    }


def _rule_out(rule: DispatchRule) -> dict[str, Any]:
    identity = None
    if rule.identity_match_kind:
        identity = {"kind": rule.identity_match_kind, "value": rule.identity_match_value}
    return {
        "name": rule.name,
        "enabled": rule.enabled,
        "priority": rule.priority,
        "room": {"kind": rule.room_match_kind, "value": rule.room_match_value},
        "identity": identity,
        "attributes": rule.attribute_conditions or {},
        "agent": rule.agent.agent_name,
        "metadata_template": rule.metadata_template,
        "delivery": rule.delivery,
        "stop": rule.stop,
        # LiveKit's dispatch fields, only when set (files from before them stay identical).
        **({"deployment": rule.deployment} if rule.deployment else {}),
        **({"dispatch_attributes": rule.dispatch_attributes} if rule.dispatch_attributes else {}),
    }


def _rule_fields(item: dict[str, Any], agents: dict[str, Agent]) -> dict[str, Any]:
    identity = item.get("identity") or {}
    if item["agent"] not in agents:
        raise ImportError_(f"rule '{item['name']}': unknown agent '{item['agent']}'")
    return {
        "enabled": item.get("enabled", True),
        "priority": item.get("priority", 100),
        "room_match_kind": item["room"]["kind"],
        "room_match_value": item["room"]["value"],
        "identity_match_kind": identity.get("kind", ""),
        "identity_match_value": identity.get("value", ""),
        "attribute_conditions": item.get("attributes") or {},
        "agent": agents[item["agent"]],
        "metadata_template": item.get("metadata_template") or {},
        "delivery": item.get("delivery", "token"),
        "stop": item.get("stop", False),
        "deployment": item.get("deployment") or "",
        "dispatch_attributes": item.get("dispatch_attributes") or {},
    }


def _diff(obj: Any, fields: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    changes = {}
    for name, new in fields.items():
        old = getattr(obj, name)
        if old != new:
            changes[name] = (old, new)
    return changes


def _apply(model: type[models.Model], key: str, name: str, fields: dict[str, Any], lines: list[str]) -> Any:
    obj = model._default_manager.filter(**{key: name}).first()
    label = f"{model._meta.verbose_name} '{name}'"
    if obj is None:
        obj = model(**{key: name}, **fields)
        lines.append(f"+ create {label}")
    else:
        changes = _diff(obj, fields)
        if not changes:
            return obj
        for field, (old, new) in changes.items():
            lines.append(f"~ update {label}: {field}: {old!r} -> {new!r}")
            setattr(obj, field, new)
    try:
        obj.full_clean()
    except ValidationError as exc:
        raise ImportError_(
            f"{label}: {exc.message_dict if hasattr(exc, 'error_dict') else exc.messages}"
        ) from None
    obj.save()
    return obj


def rules_import(data: Any, *, dry_run: bool = False, prune: bool = False) -> list[str]:
    """Create or update agents and rules by name; returns the diff, one line per change.
    With `dry_run` nothing is kept. With `prune`, rules absent from the file are deleted."""
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("agents", []), list)
        or not isinstance(data.get("rules", []), list)
    ):
        raise ImportError_('expected {"agents": [...], "rules": [...]}')
    lines: list[str] = []
    try:
        with transaction.atomic():
            agents: dict[str, Agent] = {a.agent_name: a for a in Agent.objects.all()}
            for item in data.get("agents", []):
                fields = {f: item[f] for f in AGENT_FIELDS if f in item}
                agents[item["agent_name"]] = _apply(Agent, "agent_name", item["agent_name"], fields, lines)
            for item in data.get("agents", []):  # fallbacks once every agent exists
                fallback = item.get("fallback")
                if fallback is not None and fallback not in agents:
                    raise ImportError_(f"agent '{item['agent_name']}': unknown fallback '{fallback}'")
                _apply(Agent, "agent_name", item["agent_name"], {"fallback": agents.get(fallback)}, lines)
            names = set()
            for item in data.get("rules", []):
                names.add(item["name"])
                _apply(DispatchRule, "name", item["name"], _rule_fields(item, agents), lines)
            if prune:
                for rule in DispatchRule.objects.exclude(name__in=names):
                    lines.append(f"- delete dispatch rule '{rule.name}'")
                    rule.delete()
            if lines:
                ruleset_bump()
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    except (KeyError, TypeError) as exc:
        raise ImportError_(f"missing or malformed field: {exc}") from None
    return lines


class _DryRun(Exception):
    """Rolls the dry run's transaction back."""
