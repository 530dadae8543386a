"""Serializer pieces every API shares: strict strings, LiveKit names, no unknown fields.

Also the name check the hand-written token validator uses, so every endpoint refuses the
same names with the same words."""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers

from .limits import MAX_METADATA_BYTES, MAX_NAME_LENGTH  # noqa: F401  (one place for each limit)

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


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

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class LiveKitName(StrictCharField):
    """A room name, identity or agent name LiveKit accepts (see `name_problem`)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MAX_NAME_LENGTH)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        problem = name_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error naming them, not silently dropped."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)
