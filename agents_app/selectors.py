"""Reads. The token path's whole configuration (compiled rules and client keys) is held per
process and reloaded only when the rule-set change marker in the cache moves, so a token
request makes no database query in the steady state."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from dispatchportal.redis import redis_available, redis_down_mark
from dispatchportal.reserved import is_canary_room

from .models import Agent, ApiClient, DispatchRule, RuleSetVersion
from .rules import CompiledRule, Matcher, RuleError, RuleSet, RuleSpec, matcher_compile, rule_compile

logger = logging.getLogger(__name__)
CHANGE_MARKER_KEY = "agents:ruleset-change-marker"
GRANT_FIELDS = ("can_publish", "can_subscribe", "can_publish_data", "can_update_own_metadata", "hidden")


def key_digest(key: str) -> str:
    """API keys are 32 random bytes: a plain SHA-256 is a safe digest for them."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ClientScope:
    """What one API client may do, as the token path needs it."""

    id: int
    name: str
    enabled: bool
    room_patterns: tuple[Matcher, ...]
    agent_names: frozenset[str]
    client_agents: bool
    max_ttl_s: int
    ceiling: dict[str, bool]
    rate_limit_per_minute: int
    room_name_template: str

    def room_allowed(self, room_name: str) -> bool:
        if is_canary_room(room_name):  # reserved for the portal's canary probes
            return False
        return any(p.match(room_name) is not None for p in self.room_patterns)


@dataclass(frozen=True, slots=True)
class Scope:
    """What one API caller may see and name: the one scoping rule every read and write of
    the API applies at its source (selectors, services, the doctor's fact gathering).

    `client` None is everything: a superuser, or a staff session holding the Django
    permission the endpoint asks for. A client key sees only rooms its patterns allow; in
    such a room, the rules whose room match takes it, the agents those rules name, the
    agents it may name itself and whatever is in that room (its ledger, its participants);
    it may name (dispatch, draft) only its own agents. Anything else is answered as if it
    did not exist, so names of other clients' agents, rules and rooms never show."""

    client: ClientScope | None = None

    @property
    def everything(self) -> bool:
        return self.client is None

    def room_allowed(self, room_name: str) -> bool:
        return self.client is None or self.client.room_allowed(room_name)

    def agent_nameable(self, agent_name: str) -> bool:
        """May this caller ask for the agent (dispatch it, draft a rule for it)?"""
        return self.client is None or agent_name in self.client.agent_names

    def rule_visible(self, rule: CompiledRule, *, room_name: str) -> bool:
        """A client sees a rule only when its room match takes `room_name` (one of its rooms)."""
        return self.client is None or rule.room.match(room_name) is not None

    def agents_visible(self, *, room_name: str) -> frozenset[str] | None:
        """The agent names this caller may see in answers about `room_name` (None: all): its
        own agents and those of the rules that take the room. Agents found in the room
        itself are the room's and are added by whoever reads them."""
        if self.client is None:
            return None
        named = {r.spec.agent_name for r in config_get().rules.rules if r.room.match(room_name) is not None}
        return frozenset(named | self.client.agent_names)


EVERYTHING = Scope()


@dataclass(frozen=True, slots=True)
class Config:
    change_marker: str
    version: int
    rules: RuleSet
    clients: dict[str, ClientScope]
    agents: dict[str, bool]  # agent name -> enabled


def _client_scope(client: ApiClient) -> ClientScope:
    patterns = []
    for pattern in client.room_patterns or []:
        try:
            patterns.append(matcher_compile("glob", pattern))
        except RuleError:
            logger.warning("api client %s has an invalid room pattern", client.name)
    return ClientScope(
        id=client.pk,
        name=client.name,
        enabled=client.enabled,
        room_patterns=tuple(patterns),
        agent_names=frozenset(a.agent_name for a in client.agents.all()),
        client_agents=client.client_agents,
        max_ttl_s=client.max_ttl_s,
        ceiling={f: getattr(client, f) for f in GRANT_FIELDS},
        rate_limit_per_minute=client.rate_limit_per_minute,
        room_name_template=client.room_name_template,
    )


def ruleset_build(
    rules: list[DispatchRule] | None = None, *, extra: Sequence[RuleSpec] = (), version: int = 0
) -> RuleSet:
    """Compile rules (all rows when None). A row that no longer compiles is skipped with a
    warning rather than taking every token request down."""
    if rules is None:
        rules = list(DispatchRule.objects.select_related("agent"))
    compiled: list[CompiledRule] = []
    for spec in [r.spec() for r in rules] + list(extra):
        try:
            compiled.append(rule_compile(spec))
        except RuleError as exc:
            logger.warning("rule %r skipped: %s: %s", spec.name, exc.field, exc.message)
    return RuleSet(compiled, version=version)


def _config_load(change_marker: str) -> Config:
    row = RuleSetVersion.objects.filter(ident=1).first()
    clients = ApiClient.objects.prefetch_related("agents")
    return Config(
        change_marker=change_marker,
        version=row.version if row else 0,
        rules=ruleset_build(version=row.version if row else 0),
        clients={c.key_digest: _client_scope(c) for c in clients},
        agents=dict(Agent.objects.values_list("agent_name", "enabled")),
    )


_lock = threading.Lock()
_current: Config | None = None
_checked_at = 0.0


def change_marker_get() -> str:
    marker = None
    try:
        if redis_available():  # while Redis is known down, do not wait on it
            marker = cache.get(CHANGE_MARKER_KEY)
    except (RedisError, OSError):  # Redis restarting must not fail token requests
        logger.warning("cache unreachable; reading the rule-set change marker from the database")
        redis_down_mark()
    if marker is None:
        row = RuleSetVersion.objects.filter(ident=1).first()
        marker = row.change_marker if row else "initial"
        if redis_available():
            with contextlib.suppress(RedisError, OSError):
                cache.add(CHANGE_MARKER_KEY, marker, None)
    return marker


def config_get(*, fresh: bool = False) -> Config:
    """The current configuration, compiled once per change of the rule set.

    The shared change marker is read at most every CONFIG_CHECK_INTERVAL_S per process (one
    cache round trip saved on almost every token request), or now with `fresh`; changes made
    in this process apply at once (`config_invalidate`), other processes see them within the
    interval."""
    global _current, _checked_at
    current = _current
    now = time.monotonic()
    if not fresh and current is not None and now - _checked_at < settings.CONFIG_CHECK_INTERVAL_S:
        return current
    marker = change_marker_get()
    _checked_at = now
    if current is not None and current.change_marker == marker:
        return current
    with _lock:
        if _current is None or _current.change_marker != marker:
            _current = _config_load(marker)
        return _current


def config_invalidate() -> None:
    """Drop this process's compiled configuration (after a change made here)."""
    global _current
    _current = None


def client_scope_get(*, client_id: int) -> ClientScope | None:
    """One API client's scope, as the token path holds it (None: no such client)."""
    return next((c for c in config_get().clients.values() if c.id == client_id), None)


def agents_join_deadline(*, agent_names: Sequence[str]) -> dict[str, int]:
    """Seconds each named agent has to join after a dispatch (its `join_deadline_s`)."""
    return dict(Agent.objects.filter(agent_name__in=agent_names).values_list("agent_name", "join_deadline_s"))
