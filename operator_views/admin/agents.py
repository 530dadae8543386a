"""Admin for agents, rules and API clients, with the rule explain page.

Bulk actions go through services so each moves the rule-set version; history comes from
django-simple-history (the History button on every object)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import escape, format_html
from simple_history.admin import SimpleHistoryAdmin
from simple_history.template_utils import HistoricalRecordContextHelper

from agents_app import services
from agents_app.models import Agent, ApiClient, DispatchRule
from agents_app.rules import Join, RuleError, RuleSpec, rule_compile
from agents_app.selectors import config_get, key_digest
from rooms_app.selectors import AgentSighting, agents_last_seen

from ..doctor.facts import agent_names_near, agent_names_seen_recorded
from ..doctor.wording import near_names_question
from ..helpers import duration_text

AUTOMATIC_WARNING = (
    "This agent has an empty name: it stands for the unnamed worker, which LiveKit sends to "
    "every new room automatically. A worker registered WITH a name never gets automatic "
    "dispatch; it only comes when a rule, token or API call names it exactly."
)


NEVER_SEEN = "never seen"
NEAR_NAMES_WINDOW = timedelta(days=30)  # sightings recent enough to suggest as the meant name


def near_names_seen(agent_names: list[str]) -> dict[str, list[str]]:
    """For each name, the agent names workers were seen with (a staff page: every sighting)
    that are a typo apart, closest first; one read for all of them."""
    seen = agent_names_seen_recorded(timezone.now() - NEAR_NAMES_WINDOW)
    return {name: agent_names_near(name, seen) for name in agent_names if name}


class ReadableChanges(HistoricalRecordContextHelper):
    """A history row's field changes as a person reads them: JSON as JSON (not Python dict
    text), yes/no, choices by their labels, related rows by name, "(empty)" for nothing."""

    def prepare_delta_change_value(self, change: Any, value: Any) -> Any:
        field = self.model._meta.get_field(change.field)
        if value is None or value == "" or value == [] or value == {}:
            return "(empty)"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if getattr(field, "choices", None):
            return dict(field.flatchoices).get(value, value)
        if isinstance(value, dict | list) and not getattr(field, "many_to_many", False):
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        prepared = super().prepare_delta_change_value(change, value)
        if isinstance(prepared, list):
            return ", ".join(str(item) for item in prepared) or "(empty)"
        return prepared


class ReadableHistoryMixin:
    """The History page lists each change's fields readably (`ReadableChanges`); the change
    reason column appears only when a change has one (templates/simple_history)."""

    def get_historical_record_context_helper(self, request: HttpRequest, historical_record: Any) -> Any:
        return ReadableChanges(self.model, historical_record)  # type: ignore[attr-defined]

    def history_view(self, request: HttpRequest, object_id: str, extra_context: dict | None = None) -> Any:
        records = self.model.history.filter(**{self.model._meta.pk.attname: object_id})  # type: ignore[attr-defined]
        reasons = records.exclude(history_change_reason__isnull=True).exclude(history_change_reason="")
        context = {**(extra_context or {}), "has_change_reasons": reasons.exists()}
        return super().history_view(request, object_id, context)  # type: ignore[misc]


def sighting_text(sighting: AgentSighting | None) -> str:
    """When a worker under the agent's name was last seen, how, and as which participant."""
    if sighting is None:
        return NEVER_SEEN
    ago = (timezone.now() - sighting.at).total_seconds()
    return format_html(
        '<span class="dp-seen">{} ago</span>, {} in {} as {}',
        duration_text(max(0.0, ago)),
        sighting.how,
        sighting.room_name,
        sighting.participant_identity or "(identity unknown)",
    )


def never_seen_warning(agent_name: str) -> str:
    return (
        f"No worker registered as '{agent_name}' has ever joined a room or taken a job: check that a "
        f"worker runs with WorkerOptions(agent_name='{agent_name}')."
        if agent_name
        else "The unnamed worker has never joined a room or taken a job."
    )


class SightingsMixin:
    """Changelist rows learn when their agent was last seen, in one read for the page."""

    def agent_name_of(self, obj: Any) -> str:
        raise NotImplementedError

    def agent_enabled_of(self, obj: Any) -> bool:
        raise NotImplementedError

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)  # type: ignore[misc]
        rows = list(changelist.result_list)  # evaluated once; the page iterates the same rows
        seen = agents_last_seen(agent_names=sorted({self.agent_name_of(row) for row in rows}))
        for row in rows:
            row.sighting = seen.get(self.agent_name_of(row))
        # Only for a page being read: an action's POST redirects to a GET that says it again.
        # A disabled agent is not dispatched, so not having seen it is no warning.
        never = sorted(
            {self.agent_name_of(row) for row in rows if row.sighting is None and self.agent_enabled_of(row)}
        )
        if never and request.method == "GET":
            near = near_names_seen(never)
            names = ", ".join(
                (f"'{n}'" if n else "(unnamed)")
                + (f" ({near_names_question(near[n])})" if near.get(n) else "")
                for n in never
            )
            messages.warning(
                request,
                f"Never seen: {names}. No worker under that name has joined a room or taken a job; "
                "dispatches to it wait until they time out.",
            )
        return changelist


@admin.register(Agent)
class AgentAdmin(ReadableHistoryMixin, SightingsMixin, SimpleHistoryAdmin):
    list_display = (
        "__str__",
        "display_name",
        "enabled",
        "dispatch_mode",
        "deadline",
        "attempts",
        "fallback",
        "last_seen",
    )
    list_filter = ("enabled",)
    list_select_related = ("fallback",)
    search_fields = ("agent_name", "display_name")
    fieldsets = (
        (None, {"fields": ("agent_name", "display_name", "description", "enabled")}),
        ("Job", {"fields": ("default_metadata",)}),
        ("When it does not come", {"fields": ("join_deadline_s", "max_attempts", "fallback")}),
        ("Seen", {"fields": ("last_seen",)}),
    )
    readonly_fields = ("last_seen",)

    def agent_name_of(self, obj: Agent) -> str:
        return obj.agent_name

    def agent_enabled_of(self, obj: Agent) -> bool:
        return obj.enabled

    @admin.display(description="deadline", ordering="join_deadline_s")
    def deadline(self, agent: Agent) -> str:
        return f"{agent.join_deadline_s} s"

    @admin.display(description="attempts", ordering="max_attempts")
    def attempts(self, agent: Agent) -> int:
        return agent.max_attempts

    @admin.display(description="dispatch")
    def dispatch_mode(self, agent: Agent) -> str:
        return "automatic (every new room)" if agent.agent_name == "" else "named only"

    @admin.display(description="last seen")
    def last_seen(self, agent: Agent) -> str:
        if agent.pk is None:
            return "-"
        sighting: AgentSighting | None
        if hasattr(agent, "sighting"):  # the changelist looked up every row's at once
            sighting = agent.sighting
        else:  # the change form: one agent
            sighting = agents_last_seen(agent_names=[agent.agent_name]).get(agent.agent_name)
        if sighting is None:
            return format_html(
                '<span class="dp-never-seen" title="{}">&#9888; {}</span>',
                never_seen_warning(agent.agent_name),
                NEVER_SEEN,
            )
        return sighting_text(sighting)

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if obj.agent_name == "":
            messages.warning(request, AUTOMATIC_WARNING)
        elif not agents_last_seen(agent_names=[obj.agent_name]):
            near = near_names_seen([obj.agent_name])[obj.agent_name]
            if near:
                messages.warning(
                    request,
                    f"No worker registered as '{obj.agent_name}' has been seen; {near_names_question(near)} "
                    "(workers were seen under that name). Rename the agent if so: dispatches go to the "
                    "exact name.",
                )


@admin.register(DispatchRule)
class DispatchRuleAdmin(ReadableHistoryMixin, SightingsMixin, SimpleHistoryAdmin):
    list_display = ("name", "priority", "room_match", "agent", "how", "enabled", "stops", "warnings")
    list_editable = ("priority", "enabled")
    list_filter = ("enabled", "delivery", "room_match_kind", "agent")
    list_select_related = ("agent",)
    search_fields = ("name", "room_match_value", "agent__agent_name")
    actions = ("enable_rules", "disable_rules", "duplicate_rules")
    fieldsets = (
        (None, {"fields": ("name", "enabled", "priority", "stop")}),
        (
            "Which joins",
            {
                "fields": (
                    "room_match_kind",
                    "room_match_value",
                    "identity_match_kind",
                    "identity_match_value",
                    "attribute_conditions",
                )
            },
        ),
        ("What they get", {"fields": ("agent", "metadata_template", "delivery")}),
        ("LiveKit dispatch fields", {"fields": ("deployment", "dispatch_attributes")}),
    )

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        """Help texts are plain text: the admin renders them as HTML, where the regex example's
        `(?P<candidate>...)` would be taken for a tag and vanish."""
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if formfield is not None and formfield.help_text:
            formfield.help_text = escape(formfield.help_text)
        return formfield

    @admin.display(description="delivery", ordering="delivery")
    def how(self, rule: DispatchRule) -> str:
        """The delivery's short name (the long one would push the warnings off a laptop screen)."""
        return format_html('<span title="{}">{}</span>', rule.get_delivery_display(), rule.delivery)

    @admin.display(description="room match", ordering="room_match_value")
    def room_match(self, rule: DispatchRule) -> str:
        return f"{rule.room_match_kind}: {rule.room_match_value}"

    def agent_name_of(self, obj: DispatchRule) -> str:
        return obj.agent.agent_name

    def agent_enabled_of(self, obj: DispatchRule) -> bool:
        return obj.agent.enabled and obj.enabled

    @admin.display(description="stop", ordering="stop")
    def stops(self, rule: DispatchRule) -> str:
        """Words, not a red cross: not stopping is the normal case."""
        return format_html('<span class="dp-stop">{}</span>', "stops here") if rule.stop else ""

    @admin.display(description="warnings")
    def warnings(self, rule: DispatchRule) -> str:
        blocked_by = config_get().rules.unreachable().get(rule.name)
        notes = []
        if blocked_by:
            notes.append(f"never fires: stop rule '{blocked_by}' matches first")
        if not rule.agent.enabled:
            notes.append(f"agent '{rule.agent}' is disabled")
        if getattr(rule, "sighting", False) is None:
            notes.append(
                f"agent '{rule.agent}' was never seen: no worker under that name joined or took a job"
            )
        return "; ".join(notes)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        rules = config_get().rules
        unreachable = rules.unreachable()
        stored = DispatchRule.objects.count()
        if len(rules) < stored:
            messages.error(
                request,
                f"{stored - len(rules)} stored rule(s) no longer compile and are skipped on the "
                "token path; open and save them to see why.",
            )
        if unreachable:
            messages.warning(request, f"{len(unreachable)} enabled rule(s) can never fire.")
        return super().changelist_view(request, extra_context)

    @admin.action(description="Enable selected rules", permissions=["change"])
    def enable_rules(self, request: HttpRequest, queryset: Any) -> None:
        count = services.rules_set_enabled(rules=queryset, enabled=True)
        self.message_user(request, f"Enabled {count} rule(s).")

    @admin.action(description="Disable selected rules", permissions=["change"])
    def disable_rules(self, request: HttpRequest, queryset: Any) -> None:
        count = services.rules_set_enabled(rules=queryset, enabled=False)
        self.message_user(request, f"Disabled {count} rule(s).")

    @admin.action(description="Duplicate selected rules (copies start disabled)", permissions=["add"])
    def duplicate_rules(self, request: HttpRequest, queryset: Any) -> None:
        count = services.rules_duplicate(rules=queryset)
        self.message_user(request, f"Duplicated {count} rule(s); the copies are disabled.")

    def get_urls(self) -> list:
        explain = path(
            "explain/",
            self.admin_site.admin_view(self.explain_view),
            name="agents_app_dispatchrule_explain",
        )
        return [explain, *super().get_urls()]

    def explain_view(self, request: HttpRequest) -> HttpResponse:
        """Test rules against a sample join; with rule fields posted (from the rule form's
        'Test before saving' button), the unsaved rule is evaluated alongside the saved ones."""
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        data = request.POST if request.method == "POST" else request.GET
        context = {
            **self.admin_site.each_context(request),
            "title": "Explain rules for a sample room",
            "opts": self.model._meta,
            "sample": {
                k: data.get(k, "")
                for k in ("sample_room", "sample_identity", "sample_name", "sample_attributes")
            },
            "agents": Agent.objects.all(),
            # The room match defaults to glob, as a new rule's does and as the placeholder shows.
            "draft": {k: data.get(k, "") for k in DRAFT_FIELDS}
            | {"room_match_kind": data.get("room_match_kind") or "glob"},
            "kinds": ["exact", "prefix", "glob", "regex"],
        }
        if data.get("sample_room"):
            try:
                draft = _draft_from(data)
                join = _join_from(data)
                result = services.rules_explain(join=join, draft=draft)
                context["result"] = result
                context["room_config_json"] = json.dumps(result.room_config, indent=2)
                context["claims_json"] = json.dumps(result.token_claims, indent=2)
                context["draft_used"] = draft is not None
            except (RuleError, ValueError) as exc:
                context["error"] = getattr(exc, "message", str(exc))
        return render(request, "admin/agents_app/dispatchrule/explain.html", context)


DRAFT_FIELDS = (
    "name",
    "priority",
    "room_match_kind",
    "room_match_value",
    "identity_match_kind",
    "identity_match_value",
    "attribute_conditions",
    "agent",
    "metadata_template",
    "delivery",
    "stop",
)


def _json_field(data: Any, name: str, default: Any) -> Any:
    raw = (data.get(name) or "").strip()
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RuleError(name, f"{name} is not valid JSON: {exc.msg}") from None


def _join_from(data: Any) -> Join:
    attributes = _json_field(data, "sample_attributes", {})
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise RuleError(
            "sample_attributes", 'attributes must be a JSON object of strings, e.g. {"tier": "gold"}'
        )
    return Join(
        room_name=data["sample_room"],
        participant_identity=data.get("sample_identity", ""),
        participant_name=data.get("sample_name", ""),
        attributes=attributes,
    )


def _draft_from(data: Any) -> RuleSpec | None:
    if not data.get("room_match_value"):
        return None
    agent = Agent.objects.filter(pk=data.get("agent") or 0).first()
    if agent is None:
        raise RuleError("agent", "choose the rule's agent to test it")
    try:
        priority = int(data.get("priority") or 100)
    except ValueError:
        raise RuleError("priority", "priority must be a whole number") from None
    spec = RuleSpec(
        name=data.get("name") or "(unsaved rule)",
        agent_name=agent.agent_name,
        agent_enabled=agent.enabled,
        room_kind=data.get("room_match_kind", "glob"),
        room_value=data["room_match_value"],
        priority=priority,
        identity_kind=data.get("identity_match_kind", ""),
        identity_value=data.get("identity_match_value", ""),
        attributes=_json_field(data, "attribute_conditions", {}),
        default_metadata=agent.default_metadata,
        metadata_template=_json_field(data, "metadata_template", {}),
        delivery=data.get("delivery") or "token",
        stop=data.get("stop") in ("on", "true", "1"),
        deployment=data.get("deployment") or "",
        dispatch_attributes=_json_field(data, "dispatch_attributes", {}),
    )
    rule_compile(spec)
    return spec


@admin.register(ApiClient)
class ApiClientAdmin(ReadableHistoryMixin, SimpleHistoryAdmin):
    list_display = (
        "name",
        "key_prefix",
        "enabled",
        "rooms",
        "client_agents",
        "max_ttl_s",
        "rate_limit_per_minute",
    )
    list_filter = ("enabled", "client_agents")
    search_fields = ("name", "key_prefix")
    filter_horizontal = ("agents",)
    readonly_fields = ("key_prefix", "created_at", "updated_at")
    actions = ("revoke", "rotate_key")
    fieldsets = (
        (None, {"fields": ("name", "enabled", "key_prefix")}),
        ("Scope", {"fields": ("room_patterns", "room_name_template", "agents", "client_agents")}),
        (
            "Token ceiling",
            {
                "fields": (
                    "max_ttl_s",
                    "can_publish",
                    "can_subscribe",
                    "can_publish_data",
                    "can_update_own_metadata",
                    "hidden",
                )
            },
        ),
        ("Limits", {"fields": ("rate_limit_per_minute",)}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="rooms")
    def rooms(self, client: ApiClient) -> str:
        return ", ".join(client.room_patterns) or "(none)"

    def save_model(self, request: HttpRequest, obj: ApiClient, form: Any, change: bool) -> None:
        key = None
        if not change:
            key = services.api_key_generate()
            obj.key_prefix, obj.key_digest = key[:12], key_digest(key)
        super().save_model(request, obj, form, change)
        if key:
            _show_key_once(request, obj, key)

    @admin.action(description="Revoke selected clients (their keys stop working)", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        count = services.api_clients_revoke(clients=queryset)
        self.message_user(request, f"Revoked {count} client(s).")

    @admin.action(description="Rotate the key of the selected client", permissions=["change"])
    def rotate_key(self, request: HttpRequest, queryset: Any) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Rotate one client at a time.", level=messages.ERROR)
            return
        client = queryset.get()
        _show_key_once(request, client, services.api_client_rotate_key(client=client))


def _show_key_once(request: HttpRequest, client: ApiClient, key: str) -> None:
    messages.success(
        request,
        format_html(
            "Key for <b>{}</b>: <code id='new-api-key'>{}</code> — copy it now, it is shown only "
            "once and stored only as a digest. <a href='{}'>Back to clients</a>",
            client.name,
            key,
            reverse("admin:agents_app_apiclient_changelist"),
        ),
    )
