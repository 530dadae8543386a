"""Validation of the token endpoint's body (LiveKit's standard token-endpoint schema).

Hand-written because it sits on the hottest path: DRF's field machinery cost more than the
rest of a token request. `TokenApiSchema.InputSerializer` describes the same body in the OpenAPI
schema, and a test keeps the two in step. Errors are DRF's shape, `{field: [message]}`; a
field a client may not set at all is a 403 naming it."""

from __future__ import annotations

import json
import re
from typing import Any

from rest_framework.exceptions import ValidationError

from dispatchportal.exceptions import Forbidden
from dispatchportal.limits import DEPLOYMENT_PATTERN, MAX_DEPLOYMENT_LENGTH
from dispatchportal.serializers import MAX_METADATA_BYTES, MAX_NAME_LENGTH, name_problem

from .selectors import GRANT_FIELDS
from .services import TokenRequest

MAX_AGENT_NAME_LENGTH = 128
FIELDS = (
    "room_name",
    "participant_identity",
    "participant_name",
    "participant_metadata",
    "participant_attributes",
    "room_config",
    "ttl",
    "grants",
)
AGENT_FIELDS = ("agent_name", "metadata", "deployment")
MIN_TTL_S = 60


class _Invalid(Exception):
    def __init__(self, detail: Any) -> None:
        self.detail = detail


def _string(value: Any, *, max_length: int | None = None, max_bytes: int | None = None) -> str:
    if not isinstance(value, str):
        raise _Invalid("Must be a string.")
    if max_length is not None and len(value) > max_length:
        raise _Invalid(f"Ensure this field has no more than {max_length} characters.")
    if max_bytes is not None and len(value.encode()) > max_bytes:
        raise _Invalid(f"Over {max_bytes} bytes.")
    return value


def _livekit_name(value: Any) -> str:
    value = _string(value, max_length=MAX_NAME_LENGTH)
    problem = name_problem(value)
    if problem:
        raise _Invalid(problem)
    return value


def _attributes(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid('Expected an object of strings, e.g. {"tier": "gold"}.')
    bad = {k: ["Must be a string."] for k, v in value.items() if not isinstance(v, str)}
    if bad:
        raise _Invalid(bad)
    if any(not key for key in value):
        raise _Invalid("Attribute names must not be empty.")
    if len(json.dumps(value).encode()) > MAX_METADATA_BYTES:
        raise _Invalid(f"Over {MAX_METADATA_BYTES} bytes.")
    return value


_DEPLOYMENT = re.compile(DEPLOYMENT_PATTERN)


def _agent(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid({"non_field_errors": ["Expected a JSON object."]})
    errors: dict[str, list[Any]] = {k: ["Unknown field."] for k in value if k not in AGENT_FIELDS}
    if "agent_name" not in value:
        errors["agent_name"] = ["This field is required."]
    agent: dict[str, str] = {}
    limits = {"agent_name": MAX_AGENT_NAME_LENGTH, "metadata": None, "deployment": MAX_DEPLOYMENT_LENGTH}
    for name, limit in limits.items():
        if name in value:
            try:
                agent[name] = _string(value[name], max_length=limit, max_bytes=MAX_METADATA_BYTES)
            except _Invalid as exc:
                errors[name] = [exc.detail]
    if "deployment" in agent and not _DEPLOYMENT.match(agent["deployment"]):
        errors["deployment"] = [
            "Printable ASCII without '_' or spaces (LiveKit refuses them), e.g. 'staging'."
        ]
    if errors:
        raise _Invalid(errors)
    return agent


def _room_config(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, dict):
        raise _Invalid({"non_field_errors": ["Expected a JSON object."]})
    # Other RoomConfiguration fields (timeouts, limits, egress) are the operator's, not a
    # browser's: refuse them by name instead of dropping them.
    others = sorted(set(value) - {"agents", "name"})
    if others:
        raise Forbidden("clients may only set room_config.agents", field=f"room_config.{others[0]}")
    if "name" in value:  # ignored (the room is room_name), but only a string, as documented
        try:
            _string(value["name"], max_length=MAX_NAME_LENGTH)
        except _Invalid as exc:
            raise _Invalid({"name": [exc.detail]}) from None
    agents = value.get("agents", [])
    if not isinstance(agents, list):
        raise _Invalid({"agents": ['Expected a list of {"agent_name", "metadata"}.']})
    parsed: list[dict[str, str]] = []
    errors: list[Any] = []
    for item in agents:
        try:
            parsed.append(_agent(item))
            errors.append({})
        except _Invalid as exc:
            errors.append(exc.detail)
    if any(errors):
        raise _Invalid({"agents": errors})
    return parsed


def _ttl(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid("A valid integer is required.")
    if value < MIN_TTL_S:
        raise _Invalid(f"Ensure this value is greater than or equal to {MIN_TTL_S}.")
    return value


def _grants(value: Any) -> dict[str, bool]:
    if not isinstance(value, dict):
        raise _Invalid({"non_field_errors": ["Expected a JSON object."]})
    errors = {k: ["Unknown field."] for k in value if k not in GRANT_FIELDS}
    errors.update(
        {k: ["Must be a boolean."] for k in GRANT_FIELDS if k in value and not isinstance(value[k], bool)}
    )
    if errors:
        raise _Invalid(errors)
    return dict(value)


_PARSERS = {
    "room_name": _livekit_name,
    "participant_identity": _livekit_name,
    "participant_name": lambda v: _string(v, max_length=MAX_NAME_LENGTH),
    "participant_metadata": lambda v: _string(v, max_bytes=MAX_METADATA_BYTES),
    "participant_attributes": _attributes,
    "room_config": _room_config,
    "ttl": _ttl,
    "grants": _grants,
}


def token_request_parse(data: Any) -> dict[str, Any]:
    """The validated body: only the fields that were sent, `room_config` as its agent list."""
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["Expected a JSON object."]})
    errors: dict[str, Any] = {name: ["Unknown field."] for name in data if name not in _PARSERS}
    values: dict[str, Any] = {}
    for name, value in data.items():
        parse = _PARSERS.get(name)
        if parse is None:
            continue
        try:
            values[name] = parse(value)
        except _Invalid as exc:
            errors[name] = exc.detail if isinstance(exc.detail, dict) else [exc.detail]
    if errors:
        raise ValidationError(errors)
    return values


def token_request_from_body(data: Any) -> TokenRequest:
    """The token request a body asks for (validated by `token_request_parse`)."""
    values = token_request_parse(data)
    return TokenRequest(
        room_name=values.get("room_name", ""),
        participant_identity=values.get("participant_identity", ""),
        participant_name=values.get("participant_name", ""),
        participant_metadata=values.get("participant_metadata", ""),
        participant_attributes=values.get("participant_attributes", {}),
        agents=values.get("room_config", []),
        ttl_s=values.get("ttl"),
        grants=values.get("grants", {}),
    )
