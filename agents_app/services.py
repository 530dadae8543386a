"""Writes and decisions: the rule-set version, API clients, token minting and rule explain."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F, QuerySet
from redis.exceptions import RedisError

from dispatchportal.exceptions import ApplicationError, Forbidden
from dispatchportal.reserved import CANARY_ROOM_PREFIX, is_canary_room
from livekit_boundary.tokens import claims_build, token_sign

from . import ratelimit
from .models import Agent, ApiClient, DispatchRule, RuleSetVersion
from .room_facts import room_facts
from .rules import AppliedAgent, Join, MetadataTooLarge, RuleSet, RuleSpec, Verdict
from .selectors import (
    CHANGE_MARKER_KEY,
    EVERYTHING,
    ClientScope,
    Config,
    Scope,
    config_get,
    config_invalidate,
    key_digest,
    ruleset_build,
)

logger = logging.getLogger(__name__)
KEY_PREFIX = "dpk_"
DEFAULT_TTL_S = 6 * 3600


class RateLimited(ApplicationError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"over the client's rate limit; retry in {retry_after} s")
        self.retry_after = retry_after


# --- rule-set version ---------------------------------------------------------------------


def ruleset_bump() -> None:
    """Move the rule-set version. Readers in this transaction see the change at once; other
    processes get a fresh change marker only after commit, so none caches rules from before it."""
    marker = uuid.uuid4().hex
    if not RuleSetVersion.objects.filter(ident=1).update(version=F("version") + 1, change_marker=marker):
        RuleSetVersion.objects.get_or_create(ident=1, defaults={"version": 1, "change_marker": marker})
    _change_marker_publish(f"{marker}-uncommitted")
    config_invalidate()
    transaction.on_commit(lambda: _change_marker_publish(marker))


def _change_marker_publish(marker: str) -> None:
    try:
        cache.set(CHANGE_MARKER_KEY, marker, None)
    except (RedisError, OSError):
        logger.warning("cache unreachable; rule-set change seen on the next cache miss")


# --- API clients ---------------------------------------------------------------------------


def api_key_generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@transaction.atomic
def api_client_create(
    *,
    name: str,
    room_patterns: list[str],
    agent_names: Sequence[str] = (),
    client_agents: bool = False,
    max_ttl_s: int = DEFAULT_TTL_S,
    **fields: Any,
) -> tuple[ApiClient, str]:
    """Create a client; returns it and its key, which is never stored or shown again."""
    key = api_key_generate()
    client = ApiClient(
        name=name,
        room_patterns=list(room_patterns),
        client_agents=client_agents,
        max_ttl_s=max_ttl_s,
        key_prefix=key[:12],
        key_digest=key_digest(key),
        **fields,
    )
    client.full_clean()
    client.save()
    if agent_names:
        agents = list(Agent.objects.filter(agent_name__in=agent_names))
        missing = set(agent_names) - {a.agent_name for a in agents}
        if missing:
            raise ApplicationError(f"unknown agents: {', '.join(sorted(missing))}", field="agents")
        client.agents.set(agents)
    return client, key


def api_client_rotate_key(*, client: ApiClient) -> str:
    key = api_key_generate()
    client.key_prefix = key[:12]
    client.key_digest = key_digest(key)
    client.save(update_fields=["key_prefix", "key_digest", "updated_at"])
    return key


# --- token minting --------------------------------------------------------------------------


@dataclass(slots=True)
class TokenRequest:
    """A validated token request (the LiveKit standard token endpoint body)."""

    room_name: str = ""
    participant_identity: str = ""
    participant_name: str = ""
    participant_metadata: str = ""
    participant_attributes: dict[str, str] = field(default_factory=dict)
    agents: list[dict[str, str]] = field(default_factory=list)  # from room_config.agents
    ttl_s: int | None = None
    grants: dict[str, bool] = field(default_factory=dict)


@dataclass(slots=True)
class MintedToken:
    server_url: str
    participant_token: str
    room_name: str
    participant_identity: str
    agents: list[AppliedAgent]
    room_exists: bool = False


def _room_from_template(template: str, identity: str) -> str:
    return template.replace("{{uuid}}", uuid.uuid4().hex[:12]).replace("{{participant_identity}}", identity)


def _client_agents(
    client: ClientScope, requested: list[dict[str, str]], enabled: dict[str, bool]
) -> list[AppliedAgent]:
    if requested and not client.client_agents:
        raise Forbidden("this client may not request agents itself", field="room_config.agents")
    applied = []
    for item in requested:
        name = item["agent_name"]
        if name not in client.agent_names:
            raise Forbidden(f"agent '{name}' is not allowed for this client", field="room_config.agents")
        if not enabled.get(name, False):
            raise Forbidden(f"agent '{name}' is disabled", field="room_config.agents")
        applied.append(
            AppliedAgent(name, "client", item.get("metadata", ""), "token", item.get("deployment", ""))
        )
    return applied


def _grants(client: ClientScope, requested: dict[str, bool]) -> dict[str, bool]:
    """The grants for the token: the ceiling's publish/subscribe defaults, then what was asked
    (hidden and metadata updates only when asked); asking above the ceiling is 403."""
    for name, wanted in requested.items():
        if wanted and not client.ceiling[name]:
            raise Forbidden(f"'{name}' is above this client's grant ceiling", field=f"grants.{name}")
    chosen = {f: client.ceiling[f] for f in ("can_publish", "can_subscribe", "can_publish_data")}
    chosen.update(requested)
    return chosen


def token_mint(*, client: ClientScope, request: TokenRequest, config: Config | None = None) -> MintedToken:
    """Mint a participant token within the client's scope, applying the matching rules.
    `config` is the configuration the caller authenticated against (saves a second look-up).

    The rate limit is counted in this process (with a Redis round trip about once per lease);
    a token that carries agents makes one call into the ledger, `token_fact_intake` (its fact's
    INSERT, which reads whether the room is live; the first token of each half second in the
    process also publishes the task that applies the facts). Besides those it reads the
    configuration (cached in the process, checked against the database every
    CONFIG_CHECK_INTERVAL_S)."""
    identity = request.participant_identity or f"user-{secrets.token_hex(6)}"
    room = request.room_name
    if not room:
        if not client.room_name_template:
            raise ApplicationError("room_name is required for this client", field="room_name")
        room = _room_from_template(client.room_name_template, identity)
    if is_canary_room(room):
        raise Forbidden(
            f"room names starting '{CANARY_ROOM_PREFIX}' are reserved for canaries", field="room_name"
        )
    if not client.room_allowed(room):
        raise Forbidden(f"room '{room}' is outside this client's room patterns", field="room_name")

    ttl_s = request.ttl_s or min(DEFAULT_TTL_S, client.max_ttl_s)
    if ttl_s > client.max_ttl_s:
        raise Forbidden(f"ttl is above this client's maximum of {client.max_ttl_s} s", field="ttl")

    config = config or config_get()
    grants = _grants(client, request.grants)
    requested = _client_agents(client, request.agents, config.agents)

    join = Join(room, identity, request.participant_name, request.participant_attributes, client.name)
    try:
        agents = config.rules.evaluate(join).agents
    except MetadataTooLarge as exc:
        raise ApplicationError(str(exc), field="participant_attributes") from None
    ruled = {a.agent_name for a in agents}
    agents += [a for a in requested if a.agent_name not in ruled]

    retry_after = ratelimit.admit(key=f"client:{client.id}", limit=client.rate_limit_per_minute)
    if retry_after:
        raise RateLimited(retry_after)
    room_exists = False
    if agents:
        # The token's agents are a fact in the database before anyone holds the token.
        # LiveKit applies a token's agents only when that join creates the room
        # (livekit/livekit#4390): for a room the ledger knows is live, they are dispatched
        # explicitly instead.
        room_exists = room_facts().token_fact_intake(
            room_name=room, participant_identity=identity, agents=agents, client=client.name
        )
    if room_exists:
        agents = [replace(a, delivery="explicit") for a in agents]

    claims = claims_build(
        identity=identity,
        room=room,
        grants=grants,
        name=request.participant_name,
        metadata=request.participant_metadata,
        attributes=request.participant_attributes,
        agents=[a for a in agents if a.delivery == "token"],
    )
    participant_token = token_sign(
        claims, api_key=settings.LIVEKIT_API_KEY, api_secret=settings.LIVEKIT_API_SECRET, ttl_s=ttl_s
    )
    minted = MintedToken(
        server_url=settings.PUBLIC_LIVEKIT_URL,
        participant_token=participant_token,
        room_name=room,
        participant_identity=identity,
        agents=agents,
        room_exists=room_exists,
    )
    return minted


# --- explain --------------------------------------------------------------------------------


def _room_agent(agent: AppliedAgent) -> dict[str, Any]:
    """One RoomAgentDispatch as explain shows it (proto field names; LiveKit's optional dispatch
    fields only when set)."""
    out: dict[str, Any] = {"agent_name": agent.agent_name, "metadata": agent.metadata}
    if agent.deployment:
        out["deployment"] = agent.deployment
    if agent.attributes:
        out["attributes"] = dict(agent.attributes)
    return out


@dataclass(frozen=True, slots=True)
class Explanation:
    """What the rules do for one join: every visible rule's verdict, the agents it gets,
    the RoomConfiguration a token would carry and the token's claims."""

    room_name: str
    participant_identity: str
    rules: tuple[Verdict, ...]
    agents: tuple[AppliedAgent, ...]
    room_config: dict[str, Any]
    token_claims: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The explain API's answer."""
        return {
            "room_name": self.room_name,
            "participant_identity": self.participant_identity,
            "rules": [asdict(v) for v in self.rules],
            "agents": [asdict(a) for a in self.agents],
            "room_config": self.room_config,
            "token_claims": self.token_claims,
        }


def rules_explain(*, join: Join, draft: RuleSpec | None = None, scope: Scope = EVERYTHING) -> Explanation:
    """Every rule's verdict for this join, the RoomConfiguration it yields and the claims a
    token would carry. `draft` is an unsaved rule evaluated alongside the saved ones (it
    replaces a saved rule of the same name). A client's `scope` sees only the rules whose
    room match takes this room, and the draft: the others concern rooms that may be other
    clients'."""
    if draft is None:
        ruleset: RuleSet = config_get().rules
    else:
        rows = list(DispatchRule.objects.select_related("agent").exclude(name=draft.name))
        ruleset = ruleset_build(rows, extra=[draft])
    evaluation = ruleset.evaluate(join, explain=True)
    visible = {r.spec.name for r in ruleset.rules if scope.rule_visible(r, room_name=join.room_name)}
    if draft is not None:
        visible.add(draft.name)
    verdicts = tuple(v for v in evaluation.verdicts if v.rule in visible)
    in_token = [a for a in evaluation.agents if a.delivery == "token"]
    room_config = {"agents": [_room_agent(a) for a in in_token]}
    claims = claims_build(
        identity=join.participant_identity,
        room=join.room_name,
        grants={},
        name=join.participant_name,
        attributes=join.attributes,
        agents=in_token,
    )
    return Explanation(
        room_name=join.room_name,
        participant_identity=join.participant_identity,
        rules=verdicts,
        agents=tuple(evaluation.agents),
        room_config=room_config,
        token_claims=claims,
    )


# --- bulk admin actions ---------------------------------------------------------------------
# queryset.update() sends no signals: each action bumps the rule-set version itself.


@transaction.atomic
def rules_set_enabled(*, rules: QuerySet[DispatchRule], enabled: bool) -> int:
    count = rules.update(enabled=enabled)
    ruleset_bump()
    return count


@transaction.atomic
def rules_duplicate(*, rules: Any) -> int:
    """Copy each rule, disabled, named 'copy of …' (a copy must not clash with its source)."""
    count = 0
    for rule in rules:
        copy = DispatchRule.objects.get(pk=rule.pk)
        copy.pk = None
        copy.name = _free_name(f"copy of {rule.name}")
        copy.enabled = False
        copy.save()
        count += 1
    return count


def _free_name(base: str) -> str:
    name, n = base, 2
    while DispatchRule.objects.filter(name=name).exists():
        name, n = f"{base} ({n})", n + 1
    return name


@transaction.atomic
def api_clients_revoke(*, clients: QuerySet[ApiClient]) -> int:
    count = clients.update(enabled=False)
    ruleset_bump()
    return count
