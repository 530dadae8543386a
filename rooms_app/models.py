"""The dispatch ledger: rooms, dispatches and their timelines.

For every room it governs the portal records which agents it wants there and what became of
each request: the agent joined, or a named reason why not. A dispatch is created only by
`services.dispatch_create` and changes status only through `services.dispatch_transition`
(a conditional update, so two workers racing on one dispatch cannot both win a transition);
rooms change through the services, reconcile's bulk pass, and the participant-left webhooks
(the room's participant count). Token facts (end of this module) are appended and never
rewritten: only their bookkeeping (`applied_at`, `apply_error`) changes (a request refused
over the rate limit writes none). Finished rooms, ended dispatches, applied
facts and webhook events are deleted after their retention (`dispatchportal.retention`).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Room(models.Model):
    """A LiveKit room the portal has minted a token for, dispatched to, or seen."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for the first join"
        ACTIVE = "active", "Live"
        FINISHED = "finished", "Finished"

    name = models.CharField(
        "room name", max_length=256, unique=True, help_text="The LiveKit room name, e.g. 'interview-42'."
    )
    sid = models.CharField(
        "room sid",
        max_length=64,
        blank=True,
        help_text="LiveKit's id of the current session, e.g. 'RM_x1y2z3'. A name reused after the "
        "room finished gets a new sid.",
    )
    status = models.CharField(
        "status",
        max_length=16,
        choices=Status.choices,
        default=Status.PENDING,
        db_index=True,
        help_text="pending: a token was minted but LiveKit has not reported the room yet.",
    )
    created_at = models.DateTimeField("first known", auto_now_add=True)
    started_at = models.DateTimeField(
        "started", null=True, blank=True, help_text="When LiveKit created the current session."
    )
    finished_at = models.DateTimeField("finished", null=True, blank=True)
    last_seen_at = models.DateTimeField(
        "last seen in LiveKit", null=True, blank=True, help_text="Set by webhooks and every reconcile pass."
    )
    num_participants = models.PositiveIntegerField(
        "participants", default=0, help_text="As LiveKit last reported it, agents included."
    )
    first_token_at = models.DateTimeField(
        "first token", null=True, blank=True, help_text="When the portal minted its first token for it."
    )
    last_token_at = models.DateTimeField("last token", null=True, blank=True)
    tokens_minted = models.PositiveIntegerField(
        "tokens with agents",
        default=0,
        help_text="Tokens minted for this room that carried or applied agents.",
    )
    existed_before_token = models.BooleanField(
        "existed before the first token",
        null=True,
        blank=True,
        help_text="True: LiveKit already had the room when the portal minted its first token, so "
        "LiveKit ignored the token's agents (livekit/livekit#4390). Empty: not known.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "last_seen_at"], name="room_status_seen"),
            # The retention sweep picks the longest-finished rooms first.
            models.Index(fields=["finished_at"], condition=Q(status="finished"), name="room_finished"),
        ]

    def __str__(self) -> str:
        return self.name


LIVE_STATUSES = ("pending", "requested", "job_assigned", "agent_joined")
WAITING_STATUSES = ("pending", "requested", "job_assigned")


class Dispatch(models.Model):
    """One attempt at getting one agent into one room. A re-dispatch is a new row whose
    `previous` is the attempt it replaces, so the chain is the agent's history in the room."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        REQUESTED = "requested", "Requested from LiveKit"
        JOB_ASSIGNED = "job_assigned", "Job assigned to a worker"
        AGENT_JOINED = "agent_joined", "Agent joined"
        NO_WORKER = "no_worker", "No worker took the job"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"
        CANCELLED = "cancelled", "Cancelled"
        ROOM_CLOSED = "room_closed", "Room closed"

    class Source(models.TextChoices):
        TOKEN = "token", "Token path"
        RULE = "rule", "Explicit rule (room started)"
        API = "api", "Dispatch API"
        RECONCILE = "reconcile", "Reconcile"
        FALLBACK = "fallback", "Fallback agent"

    class Delivery(models.TextChoices):
        TOKEN = "token", "In the participant token"
        EXPLICIT = "explicit", "Explicit CreateDispatch"

    room = models.ForeignKey(Room, verbose_name="room", on_delete=models.CASCADE, related_name="dispatches")
    agent = models.ForeignKey(
        "agents_app.Agent",
        verbose_name="agent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="dispatches",
        help_text="Empty when the agent was deleted since; agent_name keeps the name.",
    )
    agent_name = models.CharField(
        "agent name", max_length=128, db_index=True, help_text="e.g. 'support-agent'."
    )
    source = models.CharField(
        "source", max_length=16, choices=Source.choices, help_text="What asked for this agent."
    )
    delivery = models.CharField(
        "delivery",
        max_length=16,
        choices=Delivery.choices,
        default=Delivery.EXPLICIT,
        help_text="token: LiveKit dispatches it when the token's join creates the room; "
        "explicit: the portal calls CreateDispatch.",
    )
    rule_name = models.CharField(
        "rule", max_length=200, blank=True, help_text="The rule that applied the agent, or 'client'."
    )
    requested_by = models.CharField(
        "requested by", max_length=200, blank=True, help_text="API client or staff user, e.g. 'web frontend'."
    )
    participant_identity_trigger = models.CharField(
        "token identity",
        max_length=256,
        blank=True,
        help_text="For token dispatches: the identity of the participant whose token carried the agent.",
    )
    metadata = models.TextField(
        "job metadata",
        blank=True,
        help_text='What the job gets as ctx.job.metadata, e.g. {"language": "en"}.',
    )
    deployment = models.CharField(
        "deployment",
        max_length=64,
        blank=True,
        help_text="LiveKit's dispatch deployment: only workers registered with it take the job, e.g. 'staging'.",
    )
    attributes = models.JSONField(
        "dispatch attributes",
        default=dict,
        blank=True,
        help_text='The job\'s attributes, e.g. {"tier": "gold"}.',
    )
    status = models.CharField(
        "status", max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    attempt = models.PositiveSmallIntegerField(
        "attempt", default=1, help_text="1 for the first dispatch of this agent, 2 for its first retry, ..."
    )
    previous = models.ForeignKey(
        "self",
        verbose_name="replaces",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        help_text="The attempt this one re-dispatches.",
    )
    livekit_dispatch_id = models.CharField(
        "LiveKit dispatch id", max_length=64, blank=True, db_index=True, help_text="e.g. 'AD_x1y2z3'."
    )
    request_tries = models.PositiveSmallIntegerField(
        "CreateDispatch tries",
        default=0,
        help_text="How many times the portal started CreateDispatch for this row; more than one "
        "means a retry, which looks up LiveKit's dispatches first.",
    )
    request_lease_until = models.DateTimeField(
        "request lease until",
        null=True,
        blank=True,
        editable=False,
        help_text="While set and in the future, one task run is talking to LiveKit for this row.",
    )
    livekit_waiting_since = models.DateTimeField(
        "waiting for LiveKit since",
        null=True,
        blank=True,
        help_text="Set while LiveKit is unreachable and this dispatch waits to be sent; cleared once "
        "LiveKit has it. An outage is not a verdict on the agent: the dispatch keeps waiting.",
    )
    agents_removed = models.JSONField(
        "agents removed",
        default=list,
        blank=True,
        help_text="Agent participants the portal removed from the room for this dispatch, e.g. "
        '[{"identity": "agent-AJ_x", "why": "a second agent of one name", "at": "..."}].',
    )
    livekit_job_id = models.CharField(
        "LiveKit job id", max_length=64, blank=True, help_text="e.g. 'AJ_x1y2z3'."
    )
    participant_identity = models.CharField(
        "agent participant",
        max_length=256,
        blank=True,
        help_text="The agent's participant identity in the room, e.g. 'agent-AJ_x1y2z3'.",
    )
    last_error = models.TextField("last error", blank=True, help_text="Why it is not (or no longer) joined.")
    deadline_at = models.DateTimeField(
        "join deadline", null=True, blank=True, help_text="When the agent must have joined by."
    )
    created_at = models.DateTimeField("created (pending)", auto_now_add=True, db_index=True)
    requested_at = models.DateTimeField("requested", null=True, blank=True)
    job_assigned_at = models.DateTimeField("job assigned", null=True, blank=True)
    joined_at = models.DateTimeField("agent joined", null=True, blank=True)
    left_at = models.DateTimeField("agent left", null=True, blank=True)
    ended_at = models.DateTimeField(
        "ended", null=True, blank=True, help_text="When it reached a final status."
    )
    updated_at = models.DateTimeField("updated", auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "dispatches"
        constraints = [
            # The one guarantee every trigger (webhook, token, API, reconcile) relies on: at
            # most one live dispatch per agent per room, whoever races.
            models.UniqueConstraint(
                fields=["room", "agent_name"],
                condition=Q(status__in=LIVE_STATUSES),
                name="one_live_dispatch_per_room_agent",
            )
        ]
        indexes = [
            models.Index(fields=["room", "agent_name", "-id"], name="dispatch_room_agent"),
            models.Index(fields=["status", "deadline_at"], name="dispatch_status_deadline"),
            # The retention sweep picks the longest-ended dispatches first.
            models.Index(fields=["ended_at"], condition=~Q(status__in=LIVE_STATUSES), name="dispatch_ended"),
        ]

    def __str__(self) -> str:
        # "#" is kept for ids (dispatch #12); the attempt is spelled out.
        return f"{self.agent_name or '(unnamed)'} in {self.room.name if self.room_id else '?'}, attempt {self.attempt}"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES


class DispatchEvent(models.Model):
    """One step of a dispatch's timeline: a transition, or a note such as a retry."""

    dispatch = models.ForeignKey(
        Dispatch, verbose_name="dispatch", on_delete=models.CASCADE, related_name="events"
    )
    at = models.DateTimeField("at", db_index=True)
    previous_status = models.CharField("from", max_length=16, blank=True)
    status = models.CharField("to", max_length=16, choices=Dispatch.Status.choices)
    detail = models.TextField("detail", blank=True, help_text="What happened, in plain words.")

    class Meta:
        ordering = ["at", "id"]
        verbose_name = "dispatch event"

    def __str__(self) -> str:
        return f"{self.previous_status or '-'} -> {self.status}"


class WebhookEvent(models.Model):
    """A verified LiveKit webhook, recorded as it arrived (its unique id makes redeliveries
    harmless); `applied_at` says the ledger has taken it in (`apply_error`: it could not)."""

    event_id = models.CharField("event id", max_length=64, unique=True, help_text="e.g. 'EV_x1y2z3'.")
    event = models.CharField("event", max_length=48, help_text="e.g. 'room_started'.")
    room_name = models.CharField("room", max_length=256, blank=True)
    participant_identity = models.CharField("participant", max_length=256, blank=True)
    agent_name = models.CharField(
        "agent name",
        max_length=128,
        blank=True,
        db_index=True,
        help_text="For an agent participant, the name its worker registered with (lk.agent_name): "
        "names seen recently show typos, e.g. 'support-agnet'.",
    )
    created_at = models.DateTimeField("sent", null=True, blank=True, help_text="LiveKit's createdAt.")
    received_at = models.DateTimeField("received", auto_now_add=True, db_index=True)
    payload = models.JSONField(
        "event",
        null=True,
        blank=True,
        editable=False,
        help_text="The verified event as LiveKit sent it (protojson), e.g. {'event': 'room_started', ...}.",
    )
    applied_at = models.DateTimeField(
        "applied", null=True, blank=True, help_text="When the ledger took the event in; empty: not yet."
    )
    apply_error = models.TextField(
        "apply error",
        blank=True,
        help_text="Why the event could not be applied, e.g. a ledger bug; kept, not retried.",
    )
    shard = models.PositiveSmallIntegerField(
        "shard",
        default=0,
        db_default=0,  # a portal not yet upgraded records its events in shard 0
        editable=False,
        help_text="Which application takes the event: all of one room's events share a shard.",
    )

    class Meta:
        ordering = ["-received_at"]
        verbose_name = "webhook event"
        indexes = [
            models.Index(
                fields=["shard", "id"],
                condition=models.Q(applied_at__isnull=True),
                name="webhook_event_pending_shard",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.room_name} ({self.event_id})"


# --- facts: what happened, kept whatever the state machine decides. Token facts are appended
# (only their bookkeeping changes); agent sightings and worker heartbeats are one row each,
# updated in place with the latest. ---------------------------------------------------------


class TokenFact(models.Model):
    """A minted token that carried agents, written before the token's answer. The fact never
    changes; `applied_at` only says the ledger's state has taken it in (or, with
    `apply_error`, that it could not be: one bad record never holds up the others)."""

    minted_at = models.DateTimeField("minted", db_index=True)
    room_name = models.CharField("room", max_length=256, help_text="e.g. 'interview-42'.")
    participant_identity = models.CharField("identity", max_length=256, help_text="e.g. 'alice'.")
    client = models.CharField("API client", max_length=200, blank=True, help_text="e.g. 'web frontend'.")
    agents = models.JSONField(
        "agents carried",
        default=list,
        help_text='Each agent and how it travels, e.g. [{"agent_name": "interviewer", "rule": "r1", '
        '"metadata": "{}", "delivery": "token"}]. delivery "explicit": the room was live, so the portal '
        "dispatches it.",
    )
    room_live = models.BooleanField(
        "room was live", default=False, help_text="The portal knew the room existed when it minted the token."
    )
    applied_at = models.DateTimeField("applied to the ledger", null=True, blank=True)
    apply_error = models.TextField("could not apply", blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "token fact"
        # Every token that carries agents inserts a row: only the indexes something reads.
        # room_name is looked up by equality (a room's facts), never by prefix, so it has no
        # `varchar_pattern_ops` twin (what `db_index=True` adds on PostgreSQL).
        indexes = [
            models.Index(fields=["id"], condition=Q(applied_at__isnull=True), name="tokenfact_unapplied"),
            models.Index(fields=["room_name"], name="tokenfact_room_name"),
        ]

    def __str__(self) -> str:
        names = ", ".join(str(a.get("agent_name", "?")) for a in self.agents if isinstance(a, dict))
        return f"token for {self.participant_identity} in {self.room_name}: {names}"


class AgentSeen(models.Model):
    """An agent name a worker really registers with, as the portal last saw it: an agent that
    joined (webhook or reconcile), a job in ListDispatch, a worker's identity attributes.
    The doctor suggests these when a dispatch names a worker nobody runs (a typo)."""

    agent_name = models.CharField("agent name", max_length=128, unique=True, help_text="e.g. 'demo-agent'.")
    room_name = models.CharField("last seen in room", max_length=256, blank=True)
    how = models.CharField("seen as", max_length=64, blank=True, help_text="e.g. 'agent joined (webhook)'.")
    last_seen_at = models.DateTimeField("last seen", db_index=True)

    class Meta:
        ordering = ["-last_seen_at"]
        verbose_name = "agent name seen"
        verbose_name_plural = "agent names seen"

    def __str__(self) -> str:
        return self.agent_name


class WorkerHeartbeat(models.Model):
    """A Celery worker's sign of life, written every few seconds by the worker itself: the
    doctor says "the worker is not running" only when no heartbeat is recent."""

    hostname = models.CharField("worker", max_length=256, unique=True, help_text="e.g. 'celery@host'.")
    started_at = models.DateTimeField("started")
    beat_at = models.DateTimeField("last heartbeat", db_index=True)

    class Meta:
        ordering = ["-beat_at"]

    def __str__(self) -> str:
        return self.hostname
