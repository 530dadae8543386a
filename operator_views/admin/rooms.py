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
from django.utils import timezone
from django.utils.html import format_html

from rooms_app.models import Dispatch, DispatchEvent, Room, WebhookEvent
from rooms_app.reconcile import reconcile_run
from rooms_app.selectors import dispatch_timeline, livekit_status
from rooms_app.services import dispatch_cancel, dispatch_redispatch

from ..doctor.views import doctor_column, doctor_url
from ..helpers import NoExamplesMixin, duration_text, precise_time, precise_times

ROOM_TIMELINES = 5  # the room page draws its latest dispatches' timelines


def timeline_context(dispatch: Dispatch, *, link: bool = False) -> dict[str, Any]:
    """What templates/admin/rooms_app/timeline.html draws for one dispatch."""
    steps = [
        {
            "key": step.key,
            "label": step.label,
            "state": step.state,
            "detail": step.detail,
            "at": precise_time(step.at) if step.at else "",
            "gap": _gap(step.since_previous_s),
        }
        for step in dispatch_timeline(dispatch=dispatch)
    ]
    url = reverse("admin:rooms_app_dispatch_change", args=[dispatch.pk]) if link else ""
    return {"dispatch": dispatch, "steps": steps, "url": url}


def _gap(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.3f} s" if seconds < 60 else duration_text(seconds)


class LiveKitBannerMixin:
    """An error banner on the page when LiveKit cannot be asked; the object page's extras."""

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
        extras = self.page_extras(object_id) if object_id.isdigit() else {}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extras})  # type: ignore[misc]

    def page_extras(self, object_id: str) -> dict[str, Any]:
        """What the object's page shows besides its fields (the doctor link, timelines)."""
        return {}


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


@precise_times(Dispatch, joined="joined_at")
class DispatchInline(ReadOnlyMixin, admin.TabularInline):
    model = Dispatch
    fields = (
        "link",
        "agent_name",
        "status",
        "attempt",
        "source",
        "participant_identity",
        "joined",
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
@precise_times(
    Room,
    created="created_at",
    started="started_at",
    last_seen="last_seen_at",
    finished="finished_at",
    first_token="first_token_at",
    last_token="last_token_at",
)
class RoomAdmin(NoExamplesMixin, LiveKitBannerMixin, ReadOnlyMixin, admin.ModelAdmin):
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
        ("Times (UTC)", {"fields": ("created", "started", "last_seen", "finished")}),
        (
            "Token path",
            {"fields": ("first_token", "last_token", "tokens_minted", "existed_before_token")},
        ),
    )
    readonly_fields = (
        "name",
        "sid",
        "status",
        "num_participants",
        "created",
        "started",
        "last_seen",
        "finished",
        "first_token",
        "last_token",
        "tokens_minted",
        "existed_before_token",
    )

    def page_extras(self, object_id: str) -> dict[str, Any]:
        room = Room.objects.filter(pk=object_id).first()
        if room is None:
            return {}
        latest = room.dispatches.select_related("room").order_by("-id")[:ROOM_TIMELINES]
        return {
            "doctor_url": doctor_url(room_name=room.name),
            "timelines": [timeline_context(d, link=True) for d in latest],
            "timelines_title": f"Timelines of the latest {ROOM_TIMELINES} dispatches",
        }

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


@precise_times(DispatchEvent, when="at")
class DispatchEventInline(ReadOnlyMixin, admin.TabularInline):
    model = DispatchEvent
    fields = ("when", "previous_status", "status", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "events, as recorded"


class AgentNameFilter(admin.SimpleListFilter):
    title = "agent"
    parameter_name = "agent_name"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        names = Dispatch.objects.order_by("agent_name").values_list("agent_name", flat=True).distinct()
        return [(name, name or "(unnamed)") for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Dispatch]) -> QuerySet[Dispatch]:
        value = self.value()
        return queryset if value is None else queryset.filter(agent_name=value)


TIMES = ("created", "requested", "job_assigned", "joined", "left", "ended", "deadline")


@admin.register(Dispatch)
@precise_times(
    Dispatch,
    created="created_at",
    requested="requested_at",
    job_assigned="job_assigned_at",
    joined="joined_at",
    left="left_at",
    ended="ended_at",
    deadline="deadline_at",
)
class DispatchAdmin(NoExamplesMixin, LiveKitBannerMixin, ReadOnlyMixin, admin.ModelAdmin):
    # What a person scans for, narrow enough for a 1366 px screen: the rest is one click away.
    list_display = ("id", "room_link", "agent_name", "status", "attempt", "age", "short_error", doctor_column)
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
        ("Times (UTC)", {"fields": TIMES}),
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
        *TIMES,
    )

    def page_extras(self, object_id: str) -> dict[str, Any]:
        dispatch = Dispatch.objects.select_related("room").filter(pk=object_id).first()
        if dispatch is None:
            return {}
        return {
            "doctor_url": doctor_url(room_name=dispatch.room.name, agent_name=dispatch.agent_name),
            "timelines": [timeline_context(dispatch)],
        }

    @admin.display(description="room", ordering="room__name")
    def room_link(self, obj: Dispatch) -> str:
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:rooms_app_room_change", args=[obj.room_id]), obj.room.name
        )

    @admin.display(description="age", ordering="-created_at")
    def age(self, obj: Dispatch) -> str:
        seconds = (timezone.now() - obj.created_at).total_seconds()
        return format_html('<span title="{}">{}</span>', precise_time(obj.created_at), duration_text(seconds))

    @admin.display(description="last error")
    def short_error(self, obj: Dispatch) -> str:
        """Its first sentence, at most two lines high; the whole of it on hover."""
        if not obj.last_error:
            return "-"
        return format_html(
            '<span class="dp-clamp" title="{}">{}</span>', obj.last_error, obj.last_error.split(". ")[0]
        )

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
@precise_times(WebhookEvent, received="received_at")
class WebhookEventAdmin(NoExamplesMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "received",
        "event",
        "room_name",
        "participant_identity",
        "agent_name",
        "event_id",
        doctor_column,
    )
    list_filter = ("event",)
    search_fields = ("room_name", "event_id", "participant_identity", "agent_name")
    date_hierarchy = "received_at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in WebhookEvent._meta.fields]
