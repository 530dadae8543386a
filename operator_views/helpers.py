"""What the operator's pages share: how times and durations read, help texts without their
examples, the admin page context, the view permission, and admin links that may be missing."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

# The operator's pages (dashboard, doctor) show the ledger: its view permission opens them.
VIEW_PERMISSION = "rooms_app.view_dispatch"


def precise_time(value: datetime | None) -> str:
    """To the millisecond: a dispatch's steps are milliseconds to seconds apart."""
    if value is None:
        return "-"
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S}.{value.microsecond // 1000:03d}"


def _precise_field(model: type[models.Model], name: str) -> Callable[[Any, Any], str]:
    """A read-only admin field showing the model's datetime `name` to the millisecond."""

    field = model._meta.get_field(name)
    description = field.verbose_name if isinstance(field, models.Field) else name

    @admin.display(description=description, ordering=name)
    def show(modeladmin: Any, obj: Any) -> str:
        return precise_time(getattr(obj, name))

    return show


def precise_times(model: type[models.Model], **fields: str) -> Callable[[type], type]:
    """Class decorator: each keyword names an admin field showing that datetime to the ms,
    e.g. @precise_times(Room, created="created_at")."""

    def decorate(admin_class: type) -> type:
        for admin_name, field_name in fields.items():
            setattr(admin_class, admin_name, _precise_field(model, field_name))
        return admin_class

    return decorate


_EXAMPLE = re.compile(r"(?:,\s*|^\s*)e\.g\.\s+(?:'[^']*'|\"[^\"]*\"|\{[^}]*\}|[^.;]*)")


def without_examples(help_text: str) -> str:
    """A help text with its examples taken out ("e.g. 'AD_x1y2z3'"): under a real value an
    example reads like data. What is left of an example-only text is nothing."""
    text = _EXAMPLE.sub("", str(help_text)).strip()
    return "" if text in ("", ".") else text


class NoExamplesMixin:
    """Read-only pages show the fields' help texts without their examples (under the values;
    a table's header keeps its "?" tooltip, which Django takes from the model)."""

    def _help_texts(self) -> dict[str, str]:
        fields = self.model._meta.fields  # type: ignore[attr-defined]
        return {f.name: without_examples(f.help_text) for f in fields if f.help_text}

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        kwargs["help_texts"] = self._help_texts()
        return super().get_form(request, obj, change, **kwargs)  # type: ignore[misc]


def duration_text(seconds: float) -> str:
    """A wait or an age as a person says it: 42 s, 7 min, 3.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def admin_page_context(request: HttpRequest, title: str) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title}


def view_permission_require(request: HttpRequest) -> None:
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied


def admin_url(name: str, *args: Any) -> str:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:  # the ledger's admin is not registered (e.g. a trimmed-down site)
        return ""
