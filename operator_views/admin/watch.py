"""Admin for alert targets, incidents and deliveries, worker health URLs, and canaries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from dispatchportal.reserved import CANARY_ROOM_PREFIX
from rooms_app.models import Dispatch, Room
from watch_app import alerts, canary, tasks
from watch_app.models import AlertDelivery, AlertTarget, CanaryRun, CanarySchedule, Incident, WorkerEndpoint
from watch_app.net import UrlRefused, safe_host, url_check
from watch_app.selectors import agents_presence

from ..doctor.views import doctor_url


class ReadOnlyAdmin(admin.ModelAdmin):
    """History written by the services: visible, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields if f.name != "id"]


class UrlCheckedForm(forms.ModelForm):
    """A form whose `url` must pass the outbound rules for its `allow_private` choice."""

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}  # Django's ModelForm.clean returns cleaned_data
        if data.get("url"):
            try:
                url_check(data["url"], allow_private=bool(data.get("allow_private")))
            except UrlRefused as exc:
                self.add_error("url", str(exc))
        return data


class AlertTargetForm(UrlCheckedForm):
    new_secret = forms.CharField(
        label="set signing secret",
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Webhooks only. Leave empty to keep the current one (or, for a new webhook, to "
        "generate one, shown once). At least 32 characters, e.g. from `openssl rand -hex 32`.",
    )

    class Meta:
        model = AlertTarget
        fields = (
            "name",
            "kind",
            "url",
            "enabled",
            "allow_private",
            "max_per_hour",
            "max_attempts",
            "timeout_s",
        )

    def clean_new_secret(self) -> str:
        secret = self.cleaned_data["new_secret"]
        if secret and len(secret) < 32:
            raise forms.ValidationError("use at least 32 characters")
        return secret


_DELIVERY_FIELDS: tuple[str, ...] = (
    "created_at",
    "incident",
    "event",
    "status",
    "attempts",
    "response_status",
    "last_error",
    "next_attempt_at",
    "sent_at",
)


class DeliveryInline(admin.TabularInline):
    model = AlertDelivery
    fields = _DELIVERY_FIELDS
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("-created_at",)

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("incident", "target")


@admin.register(AlertTarget)
class AlertTargetAdmin(admin.ModelAdmin):
    form = AlertTargetForm
    list_display = ("name", "kind", "host", "enabled", "private", "max_per_hour", "secret_state")
    list_filter = ("kind", "enabled")
    fieldsets = (
        (None, {"fields": ("name", "kind", "url", "enabled")}),
        ("Signing (webhooks)", {"fields": ("secret_state", "new_secret")}),
        ("Delivery", {"fields": ("allow_private", "max_per_hour", "max_attempts", "timeout_s")}),
    )
    readonly_fields = ("secret_state",)
    inlines = [DeliveryInline]

    @admin.display(description="private addresses", ordering="allow_private")
    def private(self, target: AlertTarget) -> str:
        """Words, not a red cross: public-only is the normal, safe case."""
        return "allowed" if target.allow_private else "public only"

    @admin.display(description="URL host")
    def host(self, target: AlertTarget) -> str:
        return safe_host(target.url)

    @admin.display(description="signing secret")
    def secret_state(self, target: AlertTarget) -> str:
        if target.kind == AlertTarget.Kind.SLACK:
            return "not used (Slack)"
        return f"set, ends …{target.secret[-4:]}" if target.secret else "not set"

    def save_model(self, request: HttpRequest, obj: AlertTarget, form: Any, change: bool) -> None:
        shown = alerts.target_save(target=obj, new_secret=form.cleaned_data.get("new_secret", ""))
        if shown:
            messages.warning(
                request,
                f"Signing secret for '{obj.name}' (shown once, copy it now): {shown}. Verify "
                f"{alerts.SIGNATURE_HEADER}: sha256=HMAC-SHA256(secret, raw body) in hex.",
            )


class IncidentDeliveryInline(DeliveryInline):
    """On an incident: the same columns, naming the target instead of the incident."""

    fields = tuple("target" if f == "incident" else f for f in _DELIVERY_FIELDS)
    readonly_fields = fields


MUTE_FOR = timedelta(hours=24)


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    """Incidents read as sentences with links (room, dispatch, doctor, canary run), say whether
    and where they were sent, and are acted on: resolve, acknowledge, mute."""

    list_display = (
        "opened_at",
        "status",
        "kind",
        "subject",
        "summary",
        "occurrences",
        "handled",
        "resolved_at",
    )
    list_filter = ("status", "kind")
    search_fields = ("key", "subject", "summary")
    inlines = [IncidentDeliveryInline]
    actions = ("resolve", "acknowledge", "mute")
    shown: tuple[tuple[str | None, tuple[str, ...]], ...] = (
        (None, ("summary", "status", "kind", "subject", "occurrences")),
        ("What it is about", ("links", "facts")),
        ("Alerts", ("sent", "handled")),
        ("Times (UTC)", ("opened_at", "last_seen_at", "resolved_at")),
    )
    fieldsets = tuple((title, {"fields": names}) for title, names in shown)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [name for _, names in self.shown for name in names]

    def has_act_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("watch_app.change_incident")

    @admin.display(description="links")
    def links(self, incident: Incident) -> str:
        """The room (its admin page and the doctor), the dispatch and the canary run named in
        the incident's detail."""
        detail = incident.detail if isinstance(incident.detail, dict) else {}
        parts: list[str] = []
        room_name = str(detail.get("room") or "")
        if room_name and not room_name.startswith(CANARY_ROOM_PREFIX):
            room = Room.objects.filter(name=room_name).first()
            if room is not None:
                parts.append(
                    format_html(
                        'room <a href="{}" id="incident-room-link">{}</a>',
                        reverse("admin:rooms_app_room_change", args=[room.pk]),
                        room_name,
                    )
                )
            else:
                parts.append(format_html("room {} (no longer in the ledger)", room_name))
            parts.append(
                format_html(
                    '<a href="{}" id="incident-doctor-link">ask the doctor about {}</a>',
                    doctor_url(room_name=room_name, agent_name=incident.subject or None),
                    room_name,
                )
            )
        elif incident.subject:
            parts.append(
                format_html(
                    '<a href="{}" id="incident-doctor-link">the doctor, for agent {}</a>',
                    reverse("dispatch-doctor") + "?" + urlencode({"agent": incident.subject}),
                    incident.subject,
                )
            )
        dispatch_id = detail.get("dispatch_id")
        if isinstance(dispatch_id, int) and Dispatch.objects.filter(pk=dispatch_id).exists():
            parts.append(
                format_html(
                    'dispatch <a href="{}" id="incident-dispatch-link">#{}</a>',
                    reverse("admin:rooms_app_dispatch_change", args=[dispatch_id]),
                    dispatch_id,
                )
            )
        run_id = detail.get("run_id")
        if isinstance(run_id, int):
            parts.append(
                format_html(
                    'canary run <a href="{}">#{}</a> (probe room {})',
                    reverse("admin:watch_app_canaryrun_change", args=[run_id]),
                    run_id,
                    room_name or "?",
                )
            )
        return format_html_join(" · ", "{}", ((p,) for p in parts)) if parts else "-"

    @admin.display(description="details")
    def facts(self, incident: Incident) -> str:
        """The rest of the detail as labelled lines (no raw JSON)."""
        detail = incident.detail if isinstance(incident.detail, dict) else {}
        rows = [
            (_DETAIL_LABELS.get(key, key.replace("_", " ")), _detail_value(key, value))
            for key, value in detail.items()
            if key not in ("room", "dispatch_id", "run_id") and value not in (None, "")
        ]
        if not rows:
            return "-"
        return format_html(
            '<dl class="dp-facts">{}</dl>', format_html_join("", "<dt>{}</dt><dd>{}</dd>", rows)
        )

    @admin.display(description="sent")
    def sent(self, incident: Incident) -> str:
        return alerts.incident_delivery_state(incident=incident)

    @admin.display(description="handled")
    def handled(self, incident: Incident) -> str:
        notes = []
        if incident.acknowledged_at is not None:
            notes.append(
                f"acknowledged by {incident.acknowledged_by or 'staff'} at {incident.acknowledged_at:%H:%M} UTC"
            )
        if incident.muted:
            notes.append(f"muted until {incident.muted_until:%Y-%m-%d %H:%M} UTC")
        return "; ".join(notes) or "-"

    @admin.action(description="Resolve selected incidents (the cause is fixed)", permissions=["act"])
    def resolve(self, request: HttpRequest, queryset: Any) -> None:
        who = request.user.get_username()
        done = 0
        for key in queryset.filter(status=Incident.Status.OPEN).values_list("key", flat=True):
            done += alerts.incident_resolve(key=key, summary=f"resolved by {who}") is not None
        self.message_user(
            request,
            f"{done} incident(s) resolved; a check that still finds the problem opens a new one.",
            messages.SUCCESS if done else messages.WARNING,
        )

    @admin.action(description="Acknowledge selected incidents (someone is on it)", permissions=["act"])
    def acknowledge(self, request: HttpRequest, queryset: Any) -> None:
        who = request.user.get_username()
        done = sum(alerts.incident_acknowledge(incident=i, by=who) for i in queryset)
        self.message_user(request, f"{done} incident(s) acknowledged by {who}.", messages.SUCCESS)

    @admin.action(description="Mute alerts of selected incidents for 24 hours", permissions=["act"])
    def mute(self, request: HttpRequest, queryset: Any) -> None:
        until = timezone.now() + MUTE_FOR
        for incident in queryset:
            alerts.incident_mute(incident=incident, until=until)
        self.message_user(
            request,
            f"{queryset.count()} incident(s) muted until {until:%Y-%m-%d %H:%M} UTC: no alert is sent "
            "about them (resolution included) until then.",
            messages.SUCCESS,
        )


def _detail_value(key: str, value: Any) -> str:
    if key == "status" and value in Dispatch.Status.values:
        return str(Dispatch.Status(value).label)
    return str(value)


_DETAIL_LABELS = {
    "status": "dispatch status",
    "failing_since": "failing since",
    "resolution": "resolved because",
}


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "target",
        "incident",
        "event",
        "status",
        "attempts",
        "response_status",
        "last_error",
        "next_attempt_at",
        "sent_at",
    )
    list_filter = ("status", "event", "target")
    list_select_related = ("target", "incident")


class WorkerEndpointForm(UrlCheckedForm):
    class Meta:
        model = WorkerEndpoint
        fields = ("agent", "url", "allow_private", "enabled")


@admin.register(WorkerEndpoint)
class WorkerEndpointAdmin(admin.ModelAdmin):
    form = WorkerEndpointForm
    list_display = ("agent", "url", "presence", "healthy", "load", "active_jobs", "answered_at", "last_error")
    list_filter = ("healthy", "enabled", "agent")
    list_select_related = ("agent",)
    readonly_fields = (
        "polled_at",
        "answered_at",
        "healthy",
        "load",
        "active_jobs",
        "reported_agent_name",
        "last_error",
    )
    fieldsets = (
        (None, {"fields": ("agent", "url", "allow_private", "enabled")}),
        ("Last poll", {"fields": readonly_fields}),
    )
    actions = ("poll_now",)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        names = list(WorkerEndpoint.objects.values_list("agent__agent_name", flat=True).distinct())
        self._presence = agents_presence(agent_names=names)
        return super().changelist_view(request, extra_context)

    @admin.display(description="agent presence")
    def presence(self, endpoint: WorkerEndpoint) -> str:
        found = getattr(self, "_presence", {}).get(endpoint.agent.agent_name)
        return found.message if found else ""

    @admin.action(description="Poll the selected workers now")
    def poll_now(self, request: HttpRequest, queryset: Any) -> None:
        # Queued on the outbound queue like beat's polls: a slow endpoint never holds a web worker.
        ids = list(queryset.values_list("pk", flat=True))
        tasks.workers_poll.delay(ids)
        self.message_user(request, f"Poll of {len(ids)} worker(s) queued; results show here within seconds.")


@admin.register(CanarySchedule)
class CanaryScheduleAdmin(admin.ModelAdmin):
    list_display = (
        "agent",
        "enabled",
        "every_s",
        "join_timeout_s",
        "alert_after_failures",
        "alert_p95_s",
        "last_run",
    )
    list_select_related = ("agent",)
    fieldsets = (
        (None, {"fields": ("agent", "enabled", "every_s", "join_timeout_s")}),
        ("Alerts", {"fields": ("alert_after_failures", "alert_p95_s")}),
    )
    actions = ("run_now",)

    @admin.display(description="last run")
    def last_run(self, schedule: CanarySchedule) -> str:
        run = CanaryRun.objects.filter(agent_name=schedule.agent.agent_name).first()
        if run is None:
            return "never"
        return f"{run.get_status_display()} {run.started_at:%H:%M:%S}" + (
            f" ({run.join_s} s)" if run.join_s else ""
        )

    def save_model(self, request: HttpRequest, obj: CanarySchedule, form: Any, change: bool) -> None:
        canary.canary_schedule_save(schedule=obj)

    def delete_model(self, request: HttpRequest, obj: CanarySchedule) -> None:
        canary.canary_schedule_delete(schedule=obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for schedule in queryset:
            canary.canary_schedule_delete(schedule=schedule)

    @admin.action(description="Run the selected canaries now")
    def run_now(self, request: HttpRequest, queryset: Any) -> None:
        ids = list(queryset.values_list("agent_id", flat=True))
        for agent_id in ids:
            tasks.canary_run.delay(agent_id)
        self.message_user(request, f"{len(ids)} canary run(s) queued; see Canary runs.")


@admin.register(CanaryRun)
class CanaryRunAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "agent_name", "status", "dispatch_s", "job_s", "join_s", "error")
    list_filter = ("status", "agent_name")
    search_fields = ("agent_name", "room_name", "error")
