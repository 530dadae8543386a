"""Alert targets, incidents and their deliveries; worker health endpoints; canary schedules and
runs. Rows change only through the services (`alerts.py`, `presence.py`, `canary.py`)."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

PRIVATE_LABEL = "allow private, loopback and link-local addresses"
PRIVATE_HELP = (
    "Warning: ticking this lets the portal call inside your network: private (10/8, 172.16/12, "
    "192.168/16, fc00::/7), loopback and link-local addresses, including the cloud metadata "
    "address 169.254.169.254, and plain http. Tick it only for a URL you know is internal. "
    "Unticked: https to a public address only. Checked when saved and again at every call."
)
# A delivery attempt's whole exchange must end well inside the task's time limits (tasks.py).
MAX_TIMEOUT_S = 20


class AlertTarget(models.Model):
    """Where alerts go: a signed JSON webhook or a Slack-compatible incoming webhook."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook (JSON, HMAC-SHA256 signed)"
        SLACK = "slack", "Slack-compatible incoming webhook"

    name = models.CharField("name", max_length=100, unique=True, help_text="e.g. 'on-call pager'.")
    kind = models.CharField("kind", max_length=16, choices=Kind.choices, default=Kind.WEBHOOK)
    url = models.URLField(
        "URL",
        max_length=500,
        help_text="https://… e.g. 'https://hooks.example.com/dispatch'. A Slack URL is itself a "
        "secret: admin lists show only its host.",
    )
    secret = models.CharField(
        "signing secret",
        max_length=128,
        blank=True,
        editable=False,
        help_text="Webhooks: the HMAC-SHA256 key, shown once when set; never shown again.",
    )
    enabled = models.BooleanField("enabled", default=True)
    allow_private = models.BooleanField(
        PRIVATE_LABEL,
        default=False,
        help_text=PRIVATE_HELP + " An internal target looks like 'http://10.0.0.5:9000/hook'.",
    )
    max_per_hour = models.PositiveIntegerField(
        "rate limit per hour",
        default=30,
        help_text="Messages beyond this in any hour are recorded as rate-limited, not sent, e.g. 30.",
    )
    max_attempts = models.PositiveSmallIntegerField(
        "delivery attempts",
        default=5,
        help_text="Tries per message on connection errors, timeouts, 429 and 5xx (exponential backoff).",
    )
    timeout_s = models.FloatField(
        "deadline (seconds)",
        default=5.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(MAX_TIMEOUT_S)],
        help_text="Per attempt, over the whole exchange (connect, headers, body), e.g. 5; at most "
        f"{MAX_TIMEOUT_S}.",
    )
    created_at = models.DateTimeField("created", auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "alert target"

    def __str__(self) -> str:
        return self.name


class Incident(models.Model):
    """One problem, alerted once when it opens and once when it resolves. `key` names it, e.g.
    'dispatch_gave_up:support-agent'; at most one open incident per key."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    key = models.CharField("incident key", max_length=300, db_index=True, help_text="e.g. 'livekit_down'.")
    kind = models.CharField("kind", max_length=40, help_text="e.g. 'dispatch_gave_up', 'canary_failing'.")
    subject = models.CharField("subject", max_length=200, blank=True, help_text="e.g. the agent name.")
    status = models.CharField("status", max_length=16, choices=Status.choices, default=Status.OPEN)
    summary = models.TextField("summary", help_text="What is wrong, in one line.")
    detail = models.JSONField("detail", default=dict, blank=True)
    opened_at = models.DateTimeField("opened", db_index=True)
    last_seen_at = models.DateTimeField("last seen")
    resolved_at = models.DateTimeField("resolved", null=True, blank=True)
    occurrences = models.PositiveIntegerField(
        "occurrences",
        default=1,
        help_text="How many times the problem happened while open, as its check counts events: "
        "dispatches that gave up, canary runs that failed, LiveKit probes that failed. Not how "
        "often the check ran.",
    )
    acknowledged_at = models.DateTimeField("acknowledged", null=True, blank=True)
    acknowledged_by = models.CharField("acknowledged by", max_length=150, blank=True)
    muted_until = models.DateTimeField(
        "muted until",
        null=True,
        blank=True,
        help_text="No alert is sent about this incident's key until then (its resolution and a "
        "reopening included).",
    )

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"], condition=Q(status="open"), name="one_open_incident_per_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"

    @property
    def muted(self) -> bool:
        from django.utils import timezone

        return self.muted_until is not None and self.muted_until > timezone.now()


class AlertDelivery(models.Model):
    """One message to one target about one incident's opening or resolution."""

    class Event(models.TextChoices):
        OPENED = "opened", "Opened"
        RESOLVED = "resolved", "Resolved"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (next attempt due)"
        SENDING = "sending", "Sending (attempt in flight)"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        RATE_LIMITED = "rate_limited", "Not sent: rate limit"

    target = models.ForeignKey(AlertTarget, on_delete=models.CASCADE, related_name="deliveries")
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField("event", max_length=16, choices=Event.choices)
    status = models.CharField("status", max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField("attempts", default=0)
    response_status = models.PositiveSmallIntegerField("last HTTP status", null=True, blank=True)
    last_error = models.TextField("last error", blank=True)
    created_at = models.DateTimeField("created", db_index=True)
    sent_at = models.DateTimeField("sent", null=True, blank=True)
    next_attempt_at = models.DateTimeField(
        "next attempt due",
        null=True,
        blank=True,
        help_text="Pending: when the next attempt is due; the sweep re-sends one that is overdue.",
    )
    attempt_deadline_at = models.DateTimeField(
        "attempt must end by",
        null=True,
        blank=True,
        help_text="Sending: the attempt's deadline; past it with no outcome, the sweep records the "
        "attempt as interrupted.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "alert delivery"
        verbose_name_plural = "alert deliveries"
        indexes = [
            models.Index(fields=["target", "created_at"], name="alert_delivery_target_time"),
            models.Index(fields=["status", "next_attempt_at"], name="alert_delivery_due"),
        ]

    def __str__(self) -> str:
        return f"{self.incident.key} {self.event} -> {self.target.name}"


class Condition(models.Model):
    """A watched condition's running state between checks, e.g. since when LiveKit has been
    unreachable, or how many reconcile passes in a row failed."""

    key = models.CharField("key", max_length=100, unique=True, help_text="e.g. 'livekit', 'reconcile'.")
    failing_since = models.DateTimeField("failing since", null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField("failures in a row", default=0)
    last_error = models.TextField("last error", blank=True)
    checked_at = models.DateTimeField("checked", null=True, blank=True)

    def __str__(self) -> str:
        return self.key


class WorkerEndpoint(models.Model):
    """A LiveKit Agents worker's own HTTP server (`/` health, `/worker` load and jobs), registered
    by an admin and polled by beat: the only outside view of a self-hosted worker's load."""

    agent = models.ForeignKey(
        "agents_app.Agent", verbose_name="agent", on_delete=models.CASCADE, related_name="worker_endpoints"
    )
    url = models.URLField(
        "health URL",
        max_length=500,
        help_text="The worker's HTTP server, e.g. 'http://10.0.0.7:8081'. `/` and `/worker` are read.",
    )
    allow_private = models.BooleanField(
        PRIVATE_LABEL,
        default=False,
        help_text=PRIVATE_HELP + " Workers usually sit on a private network: tick it for them.",
    )
    enabled = models.BooleanField("polled", default=True)
    polled_at = models.DateTimeField("last polled", null=True, blank=True)
    answered_at = models.DateTimeField("last answered", null=True, blank=True)
    healthy = models.BooleanField("healthy at last poll", null=True, blank=True)
    load = models.FloatField("load", null=True, blank=True, help_text="0..1 as the worker reports it.")
    active_jobs = models.PositiveIntegerField("active jobs", null=True, blank=True)
    worker_id = models.CharField("worker id", max_length=64, blank=True, help_text="e.g. 'AW_x1y2z3'.")
    reported_agent_name = models.CharField(
        "registered as", max_length=128, blank=True, help_text="The agent name the worker reports."
    )
    last_error = models.TextField("last error", blank=True)

    class Meta:
        ordering = ["agent__agent_name", "url"]
        verbose_name = "worker health URL"
        constraints = [models.UniqueConstraint(fields=["agent", "url"], name="one_endpoint_per_agent_url")]

    def __str__(self) -> str:
        return f"{self.agent} @ {self.url}"


class CanarySchedule(models.Model):
    """An agent's canary: on a schedule, dispatch it to a fresh probe room and time it."""

    agent = models.OneToOneField(
        "agents_app.Agent", verbose_name="agent", on_delete=models.CASCADE, related_name="canary"
    )
    enabled = models.BooleanField("enabled", default=True)
    every_s = models.PositiveIntegerField(
        "every (seconds)", default=300, help_text="e.g. 300 for every 5 minutes."
    )
    join_timeout_s = models.PositiveIntegerField(
        "join timeout (seconds)", default=20, help_text="A run fails when the agent has not joined by then."
    )
    alert_after_failures = models.PositiveSmallIntegerField(
        "alert after failures in a row", default=2, help_text="e.g. 2: one failed run is not an alert."
    )
    alert_p95_s = models.FloatField(
        "alert when p95 above (seconds)",
        null=True,
        blank=True,
        help_text="p95 of dispatch-to-join over the last 20 successful runs, e.g. 8. Empty: no latency alert.",
    )
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, editable=False, on_delete=models.SET_NULL
    )

    class Meta:
        verbose_name = "canary schedule"

    def __str__(self) -> str:
        return f"canary for {self.agent}"


class CanaryRun(models.Model):
    """One probe: dispatch -> job -> agent joined, timed from the CreateDispatch call."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCESS = "success", "Agent joined"
        FAILED = "failed", "Failed"

    agent_name = models.CharField("agent name", max_length=128, db_index=True)
    room_name = models.CharField("probe room", max_length=256)
    status = models.CharField("status", max_length=16, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField("error", blank=True)
    started_at = models.DateTimeField("started", db_index=True)
    dispatch_s = models.FloatField("CreateDispatch answered after (s)", null=True, blank=True)
    job_s = models.FloatField("job seen after (s)", null=True, blank=True)
    join_s = models.FloatField("agent joined after (s)", null=True, blank=True)
    finished_at = models.DateTimeField("finished", null=True, blank=True)
    livekit_dispatch_id = models.CharField("LiveKit dispatch id", max_length=64, blank=True)
    job_id = models.CharField("job id", max_length=64, blank=True)
    worker_id = models.CharField("worker id", max_length=64, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name = "canary run"
        indexes = [models.Index(fields=["agent_name", "-started_at"], name="canary_run_agent_time")]

    def __str__(self) -> str:
        return f"{self.agent_name} {self.status} {self.started_at:%Y-%m-%d %H:%M:%S}"
