"""Serializer pieces every API shares: strict strings, LiveKit names, no unknown fields.

Also the name check the hand-written token validator uses, so every endpoint refuses the
same names with the same words."""

from __future__ import annotations

import re
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers

from .limits import DEPLOYMENT_PATTERN, MAX_DEPLOYMENT_LENGTH, MAX_METADATA_BYTES, MAX_NAME_LENGTH  # noqa: F401  (one place for each limit)

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
NO_NUL_PATTERN = r"^[^\x00]*$"
# `name_problem` as a pattern, so the OpenAPI schema says what the API accepts.
NAME_PATTERN = r"^(?!\s+$)[^\x00-\x1f\x7f]*$"


def name_problem(value: str) -> str | None:
    """Why LiveKit would reject this room name, identity or agent name, or None."""
    if _CONTROL_CHARACTERS.search(value):
        return "Must not contain control characters."
    if value and not value.strip():
        return "Must not be only white space."
    return None


class StrictCharField(serializers.CharField):
    """A string, not anything that can be turned into one: 123 is a type error here."""

    default_error_messages = {"invalid": "Must be a string."}
    schema_pattern = NO_NUL_PATTERN
    pattern_message = "Must not contain NUL characters."

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        # Never fails after the checks in `to_internal_value` (DRF refuses NUL already); it
        # puts them in the schema, as `pattern`.
        self.validators.append(RegexValidator(self.schema_pattern, message=self.pattern_message))

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class LiveKitName(StrictCharField):
    """A room name, identity or agent name LiveKit accepts (see `name_problem`)."""

    schema_pattern = NAME_PATTERN

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MAX_NAME_LENGTH)
        if not kwargs.get("allow_blank"):
            kwargs.setdefault("min_length", 1)  # in the schema: blank is refused
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        problem = name_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class DeploymentField(StrictCharField):
    """LiveKit's dispatch deployment (see `limits.DEPLOYMENT_PATTERN`); blank means any."""

    schema_pattern = DEPLOYMENT_PATTERN
    pattern_message = "Printable ASCII without '_' or spaces (LiveKit refuses them), e.g. 'staging'."

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("default", "")
        kwargs.setdefault("max_length", MAX_DEPLOYMENT_LENGTH)
        super().__init__(**kwargs)


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error naming them, not silently dropped."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class StrictSerializerSchema(OpenApiSerializerExtension):
    """In the schema, a StrictSerializer's object has `additionalProperties: false`."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: str) -> Any:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        return schema


def name_schema(max_length: int = MAX_NAME_LENGTH) -> dict[str, Any]:
    """A LiveKit name as an OpenAPI schema, for path and query parameters."""
    return {"type": "string", "maxLength": max_length, "pattern": NAME_PATTERN}
