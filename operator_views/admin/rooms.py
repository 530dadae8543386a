"""Admin for the dispatch ledger: rooms, dispatches with their timelines, webhook events.

The ledger is written only by the lifecycle's services, so every field is read-only here;
what staff can do goes through actions (re-dispatch, cancel, reconcile now) that call those
services and report counts. Every page shows a banner when LiveKit is unreachable or refuses
the portal's credentials.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from dispatchportal.reserved import CANARY_ROOM_PREFIX
from rooms_app.models import Dispatch, DispatchEvent, Room, WebhookEvent
from rooms_app.reconcile import reconcile_run
from rooms_app.selectors import dispatch_timeline, livekit_status, rooms_wanted_agents
from rooms_app.services import dispatch_cancel, dispatch_redispatch

from ..doctor.views import doctor_column, doctor_url
from ..helpers import NoExamplesMixin, duration_text, precise_time, precise_times

ROOM_TIMELINES = 5  # the room page draws its latest dispatches' timelines
ROOM_STATUS_MEANING: dict[str, str] = {
    Room.Status.PENDING: "a token was minted but LiveKit has not reported the room yet",
    Room.Status.ACTIVE: "LiveKit reports the room: people and agents can be in it",
    Room.Status.FINISHED: "LiveKit closed the room (or it was found gone)",
}


def _status_label(status: str) -> str:
    try:
        return str(Dispatch.Status(status).label)
    except ValueError:
        return status


def _room_status_text(obj: Room) -> str:
    return f"{obj.get_status_display()}: {ROOM_STATUS_MEANING[obj.status]}"


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
    template = "admin/rooms_app/tabular_no_caption.html"

    @admin.display(description="dispatch id")
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
        "room_status",
        "agents",
        "num_participants",
        "started_at",
        doctor_column,
    )
    list_filter = ("status", "existed_before_token")
    search_fields = ("name", "sid")
    date_hierarchy = "created_at"
    actions = ("reconcile_now",)
    inlines = (DispatchInline,)
    fieldsets = (
        (None, {"fields": ("name", "sid", "status_now", "agents", "num_participants")}),
        ("Times (UTC)", {"fields": ("created", "started", "last_seen", "finished")}),
        (
            "Token path",
            {"fields": ("first_token", "last_token", "tokens_minted", "existed_before")},
        ),
    )
    readonly_fields = (
        "name",
        "sid",
        "status_now",
        "agents",
        "num_participants",
        "created",
        "started",
        "last_seen",
        "finished",
        "first_token",
        "last_token",
        "tokens_minted",
        "existed_before",
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

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)  # evaluated once; the page iterates the same rows
        wanted = rooms_wanted_agents(rooms=rows)
        for row in rows:
            row.wanted = wanted[row.pk]
        return changelist

    @admin.display(description="status", ordering="status")
    def room_status(self, obj: Room) -> str:
        """The status in words with what it means for this room (never a help text about
        another status under it)."""
        return format_html(
            '<span class="dp-room-status dp-room-{}" title="{}">{}</span>',
            obj.status,
            ROOM_STATUS_MEANING[obj.status],
            obj.get_status_display(),
        )

    @admin.display(description="status")
    def status_now(self, obj: Room) -> str:
        return _room_status_text(obj)

    @admin.display(description="agents expected / present")
    def agents(self, obj: Room) -> str:
        """Each agent the ledger wants in the room (`rooms_wanted_agents`, as the API's room
        state and the dashboard read it): present, or missing with where it stands."""
        wanted = getattr(obj, "wanted", None)
        if wanted is None:  # the change form: one room
            wanted = rooms_wanted_agents(rooms=[obj])[obj.pk]
        if not wanted:
            return "none expected"
        parts = []
        for a in wanted:
            name = a.agent_name or "(unnamed)"
            if a.joined:
                parts.append(format_html('<span class="dp-agent-present">{}: present</span>', name))
            elif obj.status == Room.Status.FINISHED:
                parts.append(
                    format_html('<span class="dp-agent-gone">{}: {}</span>', name, _status_label(a.status))
                )
            else:
                parts.append(
                    format_html(
                        '<span class="dp-agent-missing">{}: missing ({})</span>',
                        name,
                        _status_label(a.status),
                    )
                )
        return format_html_join(mark_safe("<br>"), "{}", ((p,) for p in parts))  # noqa: S308  a constant

    @admin.display(description="existed before the first token")
    def existed_before(self, obj: Room) -> str:
        if obj.existed_before_token is None:
            return "not known"
        if obj.existed_before_token:
            return (
                "yes: LiveKit already had the room when the portal minted its first token, so it "
                "ignored the token's agents (livekit/livekit#4390); the portal dispatched them explicitly"
            )
        return "no: the first token's join created the room, so LiveKit took the token's agents"

    @admin.action(description="Reconcile selected rooms with LiveKit now", permissions=["act"])
    def reconcile_now(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        _reconcile_report(self, request, list(queryset.values_list("name", flat=True)))


@precise_times(DispatchEvent, when="at")
class DispatchEventInline(ReadOnlyMixin, admin.TabularInline):
    """The dispatch's events in the order the portal recorded them (the timeline above shows
    the steps in the order they happened); statuses by their labels in both columns."""

    model = DispatchEvent
    fields = ("when", "from_status", "to_status", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "events, in the order the portal recorded them"
    template = "admin/rooms_app/tabular_no_caption.html"

    @admin.display(description="from")
    def from_status(self, event: DispatchEvent) -> str:
        return _status_label(event.previous_status) if event.previous_status else "(new dispatch)"

    @admin.display(description="to")
    def to_status(self, event: DispatchEvent) -> str:
        if event.previous_status == event.status:
            return f"{_status_label(event.status)} (a note; no change)"
        return _status_label(event.status)


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


class CanaryRoomsFilter(admin.SimpleListFilter):
    """Canary probe rooms send four webhooks per run: hidden unless asked for."""

    title = "canary probe rooms"
    parameter_name = "canary"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("shown", "shown too"), ("only", "only canary rooms")]

    def choices(self, changelist: Any) -> Any:
        for choice in super().choices(changelist):
            if choice["query_string"] == changelist.get_query_string(remove=[self.parameter_name]):
                choice["display"] = "hidden"
            yield choice

    def queryset(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> QuerySet[WebhookEvent]:
        value = self.value()
        if value == "shown":
            return queryset
        if value == "only":
            return queryset.filter(room_name__startswith=CANARY_ROOM_PREFIX)
        return queryset.exclude(room_name__startswith=CANARY_ROOM_PREFIX)


@admin.display(description="doctor")
def room_doctor_column(obj: WebhookEvent) -> str:
    """The doctor's link, but not for a canary's probe room: no dispatch of the ledger is there."""
    if obj.room_name.startswith(CANARY_ROOM_PREFIX):
        return "-"
    return doctor_column(obj)


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
        room_doctor_column,
    )
    list_filter = (CanaryRoomsFilter, "event")
    search_fields = ("room_name", "event_id", "participant_identity", "agent_name")
    date_hierarchy = "received_at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in WebhookEvent._meta.fields]
