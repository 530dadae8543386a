"""Admin for the dispatch ledger: rooms, dispatches with their timelines, webhook events.

The ledger is written only by the lifecycle's services, so every field is read-only here;
what staff can do goes through actions (re-dispatch, cancel, reconcile now) that call those
services and report counts. Every page shows a banner when LiveKit is unreachable or refuses
the portal's credentials.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html

from .dashboard import doctor_column
from .models import Dispatch, DispatchEvent, Room, WebhookEvent
from .reconcile import reconcile_run
from .selectors import livekit_status
from .services import dispatch_cancel, dispatch_redispatch


class LiveKitBannerMixin:
    """An error banner on the page when LiveKit cannot be asked."""

    def _banner(self, request: HttpRequest) -> None:
        status = livekit_status()
        if not status.ok:
            messages.error(request, status.problem)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "GET":
            self._banner(request)
        return super().changelist_view(request, extra_context)  # type: ignore[misc]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method == "GET":
            self._banner(request)
        return super().change_view(request, object_id, form_url, extra_context)  # type: ignore[misc]


class ReadOnlyMixin:
    """No form edits or deletes the ledger. The actions need the model's change permission, checked
    directly since has_change_permission answers False for the forms."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the ledger is the history every verdict is drawn from

    def has_act_permission(self, request: HttpRequest) -> bool:
        opts = self.opts  # type: ignore[attr-defined]
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")


def _reconcile_report(modeladmin: admin.ModelAdmin, request: HttpRequest, names: list[str]) -> None:
    report = reconcile_run(room_names=names)
    if report.skipped:
        modeladmin.message_user(
            request, "A reconcile pass is already running; try again shortly.", messages.WARNING
        )
    elif report.error:
        modeladmin.message_user(request, f"Reconcile could not ask LiveKit: {report.error}", messages.ERROR)
    else:
        modeladmin.message_user(
            request,
            f"Reconciled {len(names)} room(s) in {report.duration_s:.2f} s: {report.rooms_closed} closed, "
            f"{report.agents_joined} agent(s) found joined, {report.agents_left} found gone, "
            f"{report.dispatched + report.redispatched} dispatched, {report.deadline_checks} deadline check(s) queued.",
            messages.SUCCESS,
        )


class DispatchInline(ReadOnlyMixin, admin.TabularInline):
    model = Dispatch
    fields = (
        "link",
        "agent_name",
        "status",
        "attempt",
        "source",
        "participant_identity",
        "joined_at",
        "last_error",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-id",)
    show_change_link = False
    verbose_name_plural = "dispatches (newest first)"

    @admin.display(description="dispatch")
    def link(self, obj: Dispatch) -> str:
        return format_html(
            '<a href="{}">#{}</a>', reverse("admin:rooms_app_dispatch_change", args=[obj.pk]), obj.pk
        )


@admin.register(Room)
class RoomAdmin(LiveKitBannerMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "live",
        "agents_present",
        "num_participants",
        "started_at",
        "finished_at",
        "last_seen_at",
        doctor_column,
    )
    list_filter = ("status", "existed_before_token")
    search_fields = ("name", "sid")
    date_hierarchy = "created_at"
    actions = ("reconcile_now",)
    inlines = (DispatchInline,)
    fieldsets = (
        (None, {"fields": ("name", "sid", "status", "num_participants")}),
        ("Times", {"fields": ("created_at", "started_at", "last_seen_at", "finished_at")}),
        (
            "Token path",
            {"fields": ("first_token_at", "last_token_at", "tokens_minted", "existed_before_token")},
        ),
    )
    readonly_fields = (
        "name",
        "sid",
        "status",
        "num_participants",
        "created_at",
        "started_at",
        "last_seen_at",
        "finished_at",
        "first_token_at",
        "last_token_at",
        "tokens_minted",
        "existed_before_token",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Room]:
        joined = Dispatch.objects.filter(status=Dispatch.Status.AGENT_JOINED).only("room_id", "agent_name")
        return (
            super().get_queryset(request).prefetch_related(Prefetch("dispatches", joined, to_attr="joined"))
        )

    @admin.display(description="live", boolean=True, ordering="status")
    def live(self, obj: Room) -> bool | None:
        return {Room.Status.ACTIVE: True, Room.Status.FINISHED: False}.get(obj.status)  # type: ignore[call-overload]

    @admin.display(description="agents present")
    def agents_present(self, obj: Room) -> str:
        return ", ".join(sorted(d.agent_name for d in getattr(obj, "joined", []))) or "-"

    @admin.action(description="Reconcile selected rooms with LiveKit now", permissions=["act"])
    def reconcile_now(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        _reconcile_report(self, request, list(queryset.values_list("name", flat=True)))


class DispatchEventInline(ReadOnlyMixin, admin.TabularInline):
    model = DispatchEvent
    fields = ("at", "previous_status", "status", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "timeline"


class AgentNameFilter(admin.SimpleListFilter):
    title = "agent"
    parameter_name = "agent_name"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        names = Dispatch.objects.order_by("agent_name").values_list("agent_name", flat=True).distinct()
        return [(name, name or "(unnamed)") for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Dispatch]) -> QuerySet[Dispatch]:
        value = self.value()
        return queryset if value is None else queryset.filter(agent_name=value)


@admin.register(Dispatch)
class DispatchAdmin(LiveKitBannerMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "room_link",
        "agent_name",
        "status",
        "attempt",
        "source",
        "participant_identity",
        "created_at",
        "joined_at",
        "short_error",
        doctor_column,
    )
    list_filter = ("status", AgentNameFilter, "source", "delivery")
    list_select_related = ("room",)
    search_fields = ("room__name", "agent_name", "livekit_dispatch_id", "participant_identity")
    date_hierarchy = "created_at"
    actions = ("redispatch", "cancel", "reconcile_rooms")
    inlines = (DispatchEventInline,)
    fieldsets = (
        (None, {"fields": ("room_link", "agent_name", "status", "last_error", "attempt", "previous")}),
        (
            "Request",
            {
                "fields": (
                    "source",
                    "delivery",
                    "rule_name",
                    "requested_by",
                    "participant_identity_trigger",
                    "metadata",
                )
            },
        ),
        ("LiveKit", {"fields": ("livekit_dispatch_id", "livekit_job_id", "participant_identity")}),
        (
            "Times",
            {
                "fields": (
                    "created_at",
                    "requested_at",
                    "job_assigned_at",
                    "joined_at",
                    "left_at",
                    "ended_at",
                    "deadline_at",
                )
            },
        ),
    )
    readonly_fields = (
        "room_link",
        "agent_name",
        "status",
        "last_error",
        "attempt",
        "previous",
        "source",
        "delivery",
        "rule_name",
        "requested_by",
        "participant_identity_trigger",
        "metadata",
        "livekit_dispatch_id",
        "livekit_job_id",
        "participant_identity",
        "created_at",
        "requested_at",
        "job_assigned_at",
        "joined_at",
        "left_at",
        "ended_at",
        "deadline_at",
    )

    @admin.display(description="room", ordering="room__name")
    def room_link(self, obj: Dispatch) -> str:
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:rooms_app_room_change", args=[obj.room_id]), obj.room.name
        )

    @admin.display(description="last error")
    def short_error(self, obj: Dispatch) -> str:
        return obj.last_error if len(obj.last_error) <= 80 else obj.last_error[:77] + "..."

    @admin.action(description="Re-dispatch selected (a new attempt)", permissions=["act"])
    def redispatch(self, request: HttpRequest, queryset: QuerySet[Dispatch]) -> None:
        by = f"staff:{request.user.get_username()}"
        done = skipped = 0
        for dispatch in queryset.select_related("agent", "room"):
            if dispatch_redispatch(dispatch=dispatch, by=by) is None:
                skipped += 1
            else:
                done += 1
        self.message_user(
            request,
            f"{done} dispatch(es) re-dispatched; {skipped} skipped (still live, agent disabled or deleted, "
            "room finished, or the agent already has a live dispatch).",
            messages.SUCCESS if done else messages.WARNING,
        )

    @admin.action(description="Cancel selected (and remove their agents)", permissions=["act"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Dispatch]) -> None:
        by = f"staff:{request.user.get_username()}"
        done = sum(1 for d in queryset.select_related("room") if dispatch_cancel(dispatch=d, by=by))
        self.message_user(
            request,
            f"{done} dispatch(es) cancelled; {queryset.count() - done} had already ended.",
            messages.SUCCESS,
        )

    @admin.action(description="Reconcile the rooms of selected dispatches now", permissions=["act"])
    def reconcile_rooms(self, request: HttpRequest, queryset: QuerySet[Dispatch]) -> None:
        names = sorted(set(queryset.values_list("room__name", flat=True)))
        _reconcile_report(self, request, names)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("received_at", "event", "room_name", "participant_identity", "agent_name", "event_id")
    list_filter = ("event",)
    search_fields = ("room_name", "event_id", "participant_identity", "agent_name")
    date_hierarchy = "received_at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in WebhookEvent._meta.fields]
