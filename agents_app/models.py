"""What admins edit: agents, room-pattern dispatch rules and scoped API clients.

Validation that spans fields lives in `clean()` (admin and import both call `full_clean`);
the rule engine itself is in `rules.py`.
"""

from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from dispatchportal.reserved import CANARY_ROOM_PREFIX, pattern_reaches_canary_rooms

from .rules import RuleError, RuleSpec, rule_compile


class MatchKind(models.TextChoices):
    EXACT = "exact", "Exact"
    PREFIX = "prefix", "Prefix"
    GLOB = "glob", "Glob"
    REGEX = "regex", "Regex (whole name)"


class Delivery(models.TextChoices):
    TOKEN = "token", "In the participant token"
    EXPLICIT = "explicit", "Explicit AgentDispatch API call"


class Agent(models.Model):
    agent_name = models.CharField(
        "agent name",
        max_length=128,
        unique=True,
        blank=True,
        help_text="Exactly what the worker registers with, e.g. 'support-agent'. "
        "Empty means the unnamed worker that LiveKit sends to every new room automatically.",
    )
    display_name = models.CharField(
        "display name", max_length=200, blank=True, help_text="Shown to people, e.g. 'Support agent'."
    )
    description = models.TextField(
        "description", blank=True, help_text="What the agent does, e.g. 'Answers billing questions'."
    )
    enabled = models.BooleanField(
        "enabled", default=True, help_text="Disabled agents are never dispatched by any rule."
    )
    default_metadata = models.JSONField(
        "default job metadata",
        default=dict,
        blank=True,
        help_text='JSON the job receives as ctx.job.metadata, e.g. {"language": "en"}. '
        "A rule's metadata template is merged over it.",
    )
    join_deadline_s = models.PositiveIntegerField(
        "join deadline (s)",
        default=15,
        help_text="Seconds the agent has to join after a dispatch before it is retried, e.g. 15.",
    )
    fallback = models.ForeignKey(
        "self",
        verbose_name="fallback agent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="fallback_for",
        help_text="Dispatched instead when this agent fails every attempt, e.g. 'generic-agent'.",
    )
    max_attempts = models.PositiveSmallIntegerField(
        "max dispatch attempts", default=3, help_text="Dispatch attempts before the fallback, e.g. 3."
    )
    created_at = models.DateTimeField("created", auto_now_add=True)
    updated_at = models.DateTimeField("updated", auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["agent_name"]

    def __str__(self) -> str:
        return self.agent_name or "(unnamed automatic agent)"

    def clean(self) -> None:
        if self.fallback_id and self.fallback_id == self.pk:
            raise ValidationError({"fallback": "An agent cannot be its own fallback."})
        if self.max_attempts < 1:
            raise ValidationError({"max_attempts": "At least one attempt."})
        if not isinstance(self.default_metadata, dict):
            raise ValidationError({"default_metadata": "Must be a JSON object."})


class DispatchRule(models.Model):
    name = models.CharField(
        "name", max_length=200, unique=True, help_text="Unique, e.g. 'interviews get the interviewer'."
    )
    enabled = models.BooleanField("enabled", default=True, help_text="Disabled rules never match.")
    priority = models.IntegerField("priority", default=100, help_text="Lower runs first, e.g. 10 before 100.")
    room_match_kind = models.CharField(
        "room match kind",
        max_length=10,
        choices=MatchKind.choices,
        default=MatchKind.GLOB,
        help_text="How the room name is compared with the value below.",
    )
    room_match_value = models.CharField(
        "room match",
        max_length=256,
        help_text="e.g. 'interview-*' (glob), 'support-' (prefix) or "
        "'interview-(?P<candidate>\\d+)' (regex; named groups become {{match.candidate}}).",
    )
    identity_match_kind = models.CharField(
        "identity match kind",
        max_length=10,
        choices=MatchKind.choices,
        blank=True,
        help_text="Optional: only participants whose identity matches, e.g. glob.",
    )
    identity_match_value = models.CharField(
        "identity match", max_length=256, blank=True, help_text="e.g. 'candidate-*'."
    )
    attribute_conditions = models.JSONField(
        "attribute conditions",
        default=dict,
        blank=True,
        help_text='Participant attributes that must match, e.g. {"tier": {"kind": "exact", '
        '"value": "gold"}}.',
    )
    agent = models.ForeignKey(
        Agent,
        verbose_name="agent",
        on_delete=models.PROTECT,
        related_name="rules",
        help_text="The agent this rule dispatches.",
    )
    metadata_template = models.JSONField(
        "metadata template",
        default=dict,
        blank=True,
        help_text='JSON merged over the agent\'s default metadata, e.g. {"room": "{{room_name}}", '
        '"candidate": "{{match.candidate}}", "tier": "{{attributes.tier}}"}.',
    )
    delivery = models.CharField(
        "delivery",
        max_length=10,
        choices=Delivery.choices,
        default=Delivery.TOKEN,
        help_text="'token' puts the agent in the participant token; 'explicit' calls "
        "AgentDispatch for the room (also for rooms made by other apps or SIP).",
    )
    stop = models.BooleanField(
        "stop", default=False, help_text="When this rule matches, later rules are not evaluated."
    )
    deployment = models.CharField(
        "deployment",
        max_length=64,
        blank=True,
        help_text="LiveKit's dispatch deployment: only workers registered with it get the job, "
        "e.g. 'staging'. Empty: workers registered without one.",
    )
    dispatch_attributes = models.JSONField(
        "dispatch attributes",
        default=dict,
        blank=True,
        help_text='LiveKit\'s dispatch attributes, which the job receives, e.g. {"tier": "gold"}.',
    )
    created_at = models.DateTimeField("created", auto_now_add=True)
    updated_at = models.DateTimeField("updated", auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["priority", "name"]

    def __str__(self) -> str:
        return self.name

    def spec(self) -> RuleSpec:
        """The rule as `rules` compiles it (with its agent's name, state and default metadata)."""
        agent = self.agent
        return RuleSpec(
            name=self.name,
            agent_name=agent.agent_name,
            room_kind=self.room_match_kind,
            room_value=self.room_match_value,
            priority=self.priority,
            enabled=self.enabled,
            agent_enabled=agent.enabled,
            identity_kind=self.identity_match_kind,
            identity_value=self.identity_match_value,
            attributes=self.attribute_conditions or {},
            default_metadata=agent.default_metadata,
            metadata_template=self.metadata_template,
            delivery=self.delivery,
            stop=self.stop,
            deployment=self.deployment,
            dispatch_attributes=self.dispatch_attributes or {},
        )

    def clean(self) -> None:
        if self.agent_id is None:
            return  # the required-field error is reported on `agent`
        try:
            rule_compile(self.spec())
        except RuleError as exc:
            raise ValidationError({exc.field: exc.message}) from None
        if self.enabled and self._same_match_exists():
            raise ValidationError(
                "Another enabled rule has the same match, agent and priority: one of them would "
                "only ever be shadowed. Change the priority or disable one."
            )

    def _same_match_exists(self) -> bool:
        twins = DispatchRule.objects.filter(
            enabled=True,
            priority=self.priority,
            agent_id=self.agent_id,
            room_match_kind=self.room_match_kind,
            room_match_value=self.room_match_value,
            identity_match_kind=self.identity_match_kind,
            identity_match_value=self.identity_match_value,
        ).exclude(pk=self.pk)
        return any((t.attribute_conditions or {}) == (self.attribute_conditions or {}) for t in twins)


class RuleSetVersion(models.Model):
    """One row whose number moves on every change to agents, rules or clients.

    Token workers keep compiled rules and client keys per process and reload only when it
    moves (the pattern of django-celery-beat's PeriodicTasks).
    """

    ident = models.SmallIntegerField(default=1, primary_key=True, unique=True)
    version = models.BigIntegerField("version", default=0)
    change_marker = models.CharField(
        "change marker",
        max_length=64,
        default="initial",
        editable=False,
        help_text="A new random value on every change, e.g. '3f2a9c0e5b7d4a61'; processes serving "
        "tokens reload their rules when it moves. Not a LiveKit token.",
    )
    changed_at = models.DateTimeField("changed", auto_now=True)

    def __str__(self) -> str:
        return f"rule set v{self.version}"


class ApiClient(models.Model):
    name = models.CharField(
        "name", max_length=200, unique=True, help_text="Who calls the API, e.g. 'web frontend'."
    )
    key_prefix = models.CharField(
        "key prefix", max_length=16, editable=False, help_text="First characters of the key."
    )
    key_digest = models.CharField("key digest", max_length=64, unique=True, editable=False)
    enabled = models.BooleanField("enabled", default=True, help_text="Disabled (revoked) clients get 401.")
    room_patterns = models.JSONField(
        "allowed room patterns",
        default=list,
        blank=True,
        help_text='Globs of rooms this client may mint tokens for, e.g. ["interview-*", "support-*"]. '
        "Empty: no room.",
    )
    agents = models.ManyToManyField(
        Agent,
        verbose_name="agents it may name",
        blank=True,
        related_name="api_clients",
        help_text="Agents the client may request itself (room_config.agents, dispatch API).",
    )
    client_agents = models.BooleanField(
        "may request agents in tokens",
        default=False,
        help_text="Allow room_config.agents in token requests, limited to the agents above.",
    )
    max_ttl_s = models.PositiveIntegerField(
        "max token TTL (s)", default=6 * 3600, help_text="e.g. 3600 for one hour."
    )
    can_publish = models.BooleanField("may publish", default=True, help_text="Grant ceiling.")
    can_subscribe = models.BooleanField("may subscribe", default=True, help_text="Grant ceiling.")
    can_publish_data = models.BooleanField("may publish data", default=True, help_text="Grant ceiling.")
    can_update_own_metadata = models.BooleanField(
        "may update own metadata", default=False, help_text="Grant ceiling."
    )
    hidden = models.BooleanField(
        "may join hidden", default=False, help_text="Grant ceiling: allow hidden participants."
    )
    rate_limit_per_minute = models.PositiveIntegerField(
        "rate limit per minute", default=600, help_text="Token requests per minute, e.g. 600."
    )
    room_name_template = models.CharField(
        "room name template",
        max_length=200,
        blank=True,
        help_text="Room for requests with no room_name, e.g. 'call-{{uuid}}'. Empty: room_name "
        "is required. Placeholders: {{uuid}}, {{participant_identity}}.",
    )
    created_at = models.DateTimeField("created", auto_now_add=True)
    updated_at = models.DateTimeField("updated", auto_now=True)
    history = HistoricalRecords(excluded_fields=["key_digest"])

    class Meta:
        ordering = ["name"]
        verbose_name = "API client"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        patterns = self.room_patterns
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            raise ValidationError({"room_patterns": "A JSON list of non-empty glob strings."})
        reserved = [p for p in patterns if pattern_reaches_canary_rooms(p)]
        if reserved:
            raise ValidationError(
                {
                    "room_patterns": f"{reserved[0]!r}: rooms starting '{CANARY_ROOM_PREFIX}' are reserved for canaries."
                }
            )
