"""The rule engine: compiles dispatch rules into an index and evaluates them for one join.

Pure Python over plain values, shared by the token path, the explain tool, admin validation
and `import_rules`. Selectors turn model rows into `RuleSpec`s; nothing here touches the
database.

Semantics: enabled rules run by (priority, name); each matching rule adds its agent; the
first-ranked rule for an agent name wins and later ones are reported shadowed; a matching rule
with `stop` ends evaluation; a disabled agent is never dispatched (its rule still matches, so
its `stop` still applies).

Speed: the token path must not scan every rule. Each rule is indexed by the literal text its
room match must start with (an exact name, a prefix, the part of a glob or regex before its
first wildcard), so a room name only meets the rules whose literal start it carries, plus the
few whose pattern begins with a wildcard.
"""

from __future__ import annotations

import fnmatch
import json
import re
import re._constants as sre_constants
import re._parser as sre_parser
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dispatchportal.limits import DEPLOYMENT_PATTERN, MAX_DEPLOYMENT_LENGTH, MAX_METADATA_BYTES
from dispatchportal.reserved import CANARY_ROOM_PREFIX, is_canary_room, pattern_reaches_canary_rooms

MAX_PATTERN_LENGTH = 256
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.\-]*)\s*\}\}")
FIXED_PLACEHOLDERS = frozenset({"room_name", "participant_identity", "participant_name", "client"})
KINDS = ("exact", "prefix", "glob", "regex")
_GLOB_WILDCARDS = re.compile(r"[*?\[]")
_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)


class RuleError(ValueError):
    """A rule that cannot be compiled; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class MetadataTooLarge(ValueError):
    """Rendered job metadata over LiveKit's practical limit."""


# --- matchers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Matcher:
    """One compiled `kind`/`value` pair; `match` returns named groups, or None."""

    kind: str
    value: str
    regex: re.Pattern[str] | None
    literal_prefix: str

    def match(self, text: str) -> dict[str, str] | None:
        if self.kind == "exact":
            return {} if text == self.value else None
        if self.kind == "prefix":
            return {} if text.startswith(self.value) else None
        assert self.regex is not None
        found = self.regex.fullmatch(text)
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}

    def describe(self) -> str:
        return f"{self.kind} '{self.value}'"


def _regex_check(value: str) -> sre_parser.SubPattern:
    try:
        parsed = sre_parser.parse(value)
    except re.error as exc:
        raise RuleError("value", f"regex does not compile: {exc}") from None
    problem = _backtracking_problem(parsed, under_repeat=False)
    if problem:
        raise RuleError("value", f"regex can backtrack catastrophically: {problem}")
    return parsed


def _backtracking_problem(parsed: Iterable[Any], *, under_repeat: bool) -> str | None:
    """Reject the shapes behind exponential backtracking: nested unbounded repeats,
    alternation under a repeat, and back-references. Conservative on purpose."""
    for op, av in parsed:
        if op in _REPEATS:
            low, high, sub = av
            unbounded = high == sre_constants.MAXREPEAT
            if under_repeat and unbounded:
                return "a repeat inside a repeat, e.g. (a+)+"
            found = _backtracking_problem(sub, under_repeat=under_repeat or high > 1)
            if found:
                return found
        elif op == sre_constants.SUBPATTERN:
            found = _backtracking_problem(av[-1], under_repeat=under_repeat)
            if found:
                return found
        elif op == sre_constants.BRANCH:
            if under_repeat:
                return "an alternation under a repeat, e.g. (a|aa)*"
            for branch in av[1]:
                found = _backtracking_problem(branch, under_repeat=False)
                if found:
                    return found
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            found = _backtracking_problem(av[1], under_repeat=under_repeat)
            if found:
                return found
        elif op in (sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS):
            return "back-references are not allowed"
    return None


def _regex_literal_prefix(parsed: sre_parser.SubPattern) -> str:
    if parsed.state.flags & re.IGNORECASE:
        return ""
    chars: list[str] = []
    for op, av in parsed:
        if op == sre_constants.AT and av == sre_constants.AT_BEGINNING and not chars:
            continue
        if op != sre_constants.LITERAL:
            break
        chars.append(chr(av))
    # A literal followed by an optional repeat of itself is still fine: the repeat is a
    # separate op, so the literal run ends before it.
    return "".join(chars)


def matcher_compile(kind: str, value: str) -> Matcher:
    if kind not in KINDS:
        raise RuleError("kind", f"unknown match kind '{kind}', expected one of {', '.join(KINDS)}")
    if not isinstance(value, str) or (kind != "prefix" and not value):
        raise RuleError("value", "a non-empty string is required")
    if len(value) > MAX_PATTERN_LENGTH:
        raise RuleError("value", f"longer than {MAX_PATTERN_LENGTH} characters")
    if kind == "exact" or kind == "prefix":
        return Matcher(kind, value, None, value)
    if kind == "glob":
        wildcard = _GLOB_WILDCARDS.search(value)
        prefix = value[: wildcard.start()] if wildcard else value
        return Matcher(kind, value, re.compile(fnmatch.translate(value)), prefix)
    parsed = _regex_check(value)
    return Matcher(kind, value, re.compile(value), _regex_literal_prefix(parsed))


def matcher_covers(broad: Matcher, narrow: Matcher) -> bool:
    """True when every name `narrow` matches is certainly matched by `broad` too.

    Conservative: False when it cannot tell (regexes, mid-pattern wildcards)."""
    if (broad.kind, broad.value) in (("glob", "*"), ("regex", ".*"), ("prefix", "")):
        return True
    if narrow.kind == "exact":
        return broad.match(narrow.value) is not None
    narrow_start = narrow.literal_prefix if narrow.kind != "regex" else None
    if narrow_start is None:
        return False
    if broad.kind == "prefix":
        return narrow_start.startswith(broad.value)
    if broad.kind == "glob" and broad.value.endswith("*"):
        head = broad.value[:-1]
        return not _GLOB_WILDCARDS.search(head) and narrow_start.startswith(head)
    return False


# --- templates --------------------------------------------------------------------------


def template_placeholders(template: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(template, str):
        found.update(PLACEHOLDER.findall(template))
    elif isinstance(template, dict):
        for key, value in template.items():
            found |= template_placeholders(key) | template_placeholders(value)
    elif isinstance(template, list):
        for value in template:
            found |= template_placeholders(value)
    return found


def template_check(template: Any, *, groups: Iterable[str]) -> None:
    """Reject placeholders that could never be filled."""
    allowed_groups = set(groups)
    for name in sorted(template_placeholders(template)):
        if name in FIXED_PLACEHOLDERS:
            continue
        head, _, tail = name.partition(".")
        if head == "attributes" and tail:
            continue
        if head == "match" and tail in allowed_groups:
            continue
        if head == "match":
            hint = "named groups of a regex room match: " + (", ".join(sorted(allowed_groups)) or "none")
            raise RuleError("metadata_template", f"unknown placeholder {{{{{name}}}}} ({hint})")
        raise RuleError(
            "metadata_template",
            f"unknown placeholder {{{{{name}}}}}; use room_name, participant_identity, "
            "participant_name, client, attributes.KEY or match.GROUP",
        )


def template_render(template: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        if "{{" not in template:  # most strings are plain: skip the regex
            return template
        return PLACEHOLDER.sub(lambda m: _lookup(context, m.group(1)), template)
    if isinstance(template, dict):
        return {template_render(k, context): template_render(v, context) for k, v in template.items()}
    if isinstance(template, list):
        return [template_render(v, context) for v in template]
    return template


def _lookup(context: Mapping[str, Any], name: str) -> str:
    head, _, tail = name.partition(".")
    if tail:
        return str(context.get(head, {}).get(tail, ""))
    return str(context.get(name, ""))


def metadata_render(
    *, default: Any, template: Any, context: Mapping[str, Any], limit: int = MAX_METADATA_BYTES
) -> str:
    """The job metadata string: the rendered template merged over the agent's default."""
    rendered = template_render(template, context) if template not in (None, {}, "") else None
    if rendered is None:
        value = default
    elif isinstance(default, dict) and isinstance(rendered, dict):
        value = {**default, **rendered}
    else:
        value = rendered
    if value in (None, {}, ""):
        return ""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if len(text.encode()) > limit:
        raise MetadataTooLarge(f"rendered job metadata is over {limit} bytes")
    return text


# --- rules ------------------------------------------------------------------------------


@dataclass(slots=True)
class RuleSpec:
    """A rule as plain values, from a model row, an import file or an unsaved admin form."""

    name: str
    agent_name: str
    room_kind: str
    room_value: str
    priority: int = 100
    enabled: bool = True
    agent_enabled: bool = True
    identity_kind: str = ""
    identity_value: str = ""
    attributes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    default_metadata: Any = field(default_factory=dict)
    metadata_template: Any = field(default_factory=dict)
    delivery: str = "token"
    stop: bool = False
    # LiveKit's dispatch fields: the deployment of the agent's workers (e.g. 'staging') and
    # attributes the job receives (RoomAgentDispatch / CreateAgentDispatchRequest).
    deployment: str = ""
    dispatch_attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CompiledRule:
    spec: RuleSpec
    room: Matcher
    identity: Matcher | None
    attributes: tuple[tuple[str, Matcher], ...]
    rank: int = 0
    # The job metadata when it does not depend on the join (no template, or one without
    # placeholders): rendered once here instead of on every token.
    constant_metadata: str | None = None

    def metadata(self, context: Mapping[str, Any]) -> str:
        return metadata_render(
            default=self.spec.default_metadata, template=self.spec.metadata_template, context=context
        )


def _prefixed(exc: RuleError, prefix: str) -> RuleError:
    return RuleError(f"{prefix}{exc.field}", exc.message)


_DEPLOYMENT = re.compile(DEPLOYMENT_PATTERN)


def dispatch_fields_check(*, deployment: str, attributes: Any) -> None:
    """LiveKit's own checks of a dispatch's deployment, plus attributes as string pairs."""
    if len(deployment.encode()) > MAX_DEPLOYMENT_LENGTH:
        raise RuleError("deployment", f"at most {MAX_DEPLOYMENT_LENGTH} bytes")
    if not _DEPLOYMENT.match(deployment):
        raise RuleError(
            "deployment",
            "printable ASCII without '_' or spaces (LiveKit reserves them), e.g. 'staging'",
        )
    if not isinstance(attributes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise RuleError("dispatch_attributes", 'must be an object of strings, e.g. {"tier": "gold"}')


def rule_compile(spec: RuleSpec) -> CompiledRule:
    """Compile and validate one rule; raises RuleError naming the field."""
    try:
        room = matcher_compile(spec.room_kind, spec.room_value)
    except RuleError as exc:
        raise _prefixed(exc, "room_match_") from None
    identity = None
    if spec.identity_kind or spec.identity_value:
        try:
            identity = matcher_compile(spec.identity_kind, spec.identity_value)
        except RuleError as exc:
            raise _prefixed(exc, "identity_match_") from None
    if not isinstance(spec.attributes, Mapping):
        raise RuleError("attribute_conditions", 'must be an object like {"tier": {"kind": ..}}')
    conditions = []
    for key, cond in spec.attributes.items():
        if not isinstance(cond, Mapping) or set(cond) != {"kind", "value"}:
            raise RuleError("attribute_conditions", f"'{key}' needs exactly 'kind' and 'value'")
        try:
            conditions.append((key, matcher_compile(cond["kind"], cond["value"])))
        except RuleError as exc:
            raise RuleError("attribute_conditions", f"'{key}': {exc.message}") from None
    if spec.delivery not in ("token", "explicit"):
        raise RuleError("delivery", "must be 'token' or 'explicit'")
    if pattern_reaches_canary_rooms(spec.room_value):
        raise RuleError(
            "room_match_value", f"rooms starting '{CANARY_ROOM_PREFIX}' are reserved for canaries"
        )
    dispatch_fields_check(deployment=spec.deployment, attributes=spec.dispatch_attributes)
    groups = room.regex.groupindex if room.kind == "regex" and room.regex else {}
    template_check(spec.metadata_template, groups=groups)
    try:  # renders on a sample: catches templates that only fail at token time
        metadata_render(
            default=spec.default_metadata,
            template=spec.metadata_template,
            context=_sample_context(groups),
        )
    except MetadataTooLarge as exc:
        raise RuleError("metadata_template", str(exc)) from None
    constant = None
    if not template_placeholders(spec.metadata_template):
        constant = metadata_render(default=spec.default_metadata, template=spec.metadata_template, context={})
    return CompiledRule(spec, room, identity, tuple(conditions), constant_metadata=constant)


def _sample_context(groups: Iterable[str]) -> dict[str, Any]:
    return {
        "room_name": "sample-room",
        "participant_identity": "sample-identity",
        "participant_name": "Sample",
        "client": "sample-client",
        "attributes": {},
        "match": {g: "x" for g in groups},
    }


# --- evaluation -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """Who is joining where: the input of an evaluation."""

    room_name: str
    participant_identity: str = ""
    participant_name: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    client: str = ""


@dataclass(frozen=True, slots=True)
class AppliedAgent:
    agent_name: str
    rule: str  # the rule's name, or "client" for an agent the client asked for itself
    metadata: str
    delivery: str
    deployment: str = ""  # the deployment of the agent's workers, if any (rule or client)
    attributes: Mapping[str, str] = field(default_factory=dict)  # the dispatch's job attributes


@dataclass(frozen=True, slots=True)
class Verdict:
    rule: str
    agent_name: str
    outcome: str  # applied | shadowed | agent_disabled | not_matched | disabled | not_evaluated
    reason: str
    stop: bool = False


@dataclass(slots=True)
class Evaluation:
    agents: list[AppliedAgent]
    verdicts: list[Verdict]


class RuleSet:
    """Compiled, indexed rules of one rule-set version."""

    def __init__(self, rules: Iterable[CompiledRule], *, version: int = 0) -> None:
        self.version = version
        ordered = sorted(rules, key=lambda r: (r.spec.priority, r.spec.name))
        for rank, rule in enumerate(ordered):
            rule.rank = rank
        self.rules = ordered
        self._exact: dict[str, list[CompiledRule]] = {}
        self._by_start: dict[str, list[CompiledRule]] = {}
        for rule in ordered:
            if not rule.spec.enabled:
                continue
            if rule.room.kind == "exact":
                self._exact.setdefault(rule.room.value, []).append(rule)
            else:
                self._by_start.setdefault(rule.room.literal_prefix, []).append(rule)
        self._start_lengths = sorted({len(s) for s in self._by_start})
        self._unreachable: dict[str, str] | None = None

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, room_name: str) -> list[CompiledRule]:
        """Enabled rules whose room match could accept `room_name`, in rank order."""
        found = list(self._exact.get(room_name, ()))
        for length in self._start_lengths:
            if length > len(room_name):
                break
            bucket = self._by_start.get(room_name[:length])
            if bucket:
                found.extend(bucket)
        found.sort(key=lambda r: r.rank)
        return found

    def evaluate(self, join: Join, *, explain: bool = False) -> Evaluation:
        """Which agents this join gets; with `explain`, a verdict for every rule."""
        rules = self.rules if explain else self.candidates(join.room_name)
        if is_canary_room(join.room_name):
            reserved = "the room name is reserved for canary probes"
            return Evaluation(
                [],
                [Verdict(r.spec.name, r.spec.agent_name, "not_matched", reserved) for r in rules if explain],
            )
        applied: dict[str, AppliedAgent] = {}
        verdicts: list[Verdict] = []
        join_context = {
            "room_name": join.room_name,
            "participant_identity": join.participant_identity,
            "participant_name": join.participant_name,
            "client": join.client,
            "attributes": join.attributes,
        }
        stopped_by = ""
        for rule in rules:
            spec = rule.spec
            if not spec.enabled:
                if explain:
                    verdicts.append(Verdict(spec.name, spec.agent_name, "disabled", "rule is disabled"))
                continue
            if stopped_by:
                if not explain:
                    break
                verdicts.append(
                    Verdict(
                        spec.name, spec.agent_name, "not_evaluated", f"rule '{stopped_by}' stopped evaluation"
                    )
                )
                continue
            groups, why_not = _match(rule, join)
            if groups is None:
                if explain:
                    verdicts.append(Verdict(spec.name, spec.agent_name, "not_matched", why_not))
                continue
            if not spec.agent_enabled:
                outcome, reason = "agent_disabled", f"agent '{spec.agent_name}' is disabled"
            elif spec.agent_name in applied:
                outcome = "shadowed"
                reason = f"agent already applied by rule '{applied[spec.agent_name].rule}'"
            else:
                metadata = rule.constant_metadata
                if metadata is None:
                    metadata = rule.metadata({**join_context, "match": groups})
                applied[spec.agent_name] = AppliedAgent(
                    spec.agent_name,
                    spec.name,
                    metadata,
                    spec.delivery,
                    spec.deployment,
                    spec.dispatch_attributes,
                )
                outcome, reason = "applied", f"matched {rule.room.describe()}"
            if spec.stop:
                stopped_by = spec.name
            if explain:
                verdicts.append(Verdict(spec.name, spec.agent_name, outcome, reason, spec.stop))
        return Evaluation(list(applied.values()), verdicts)

    def unreachable(self) -> dict[str, str]:
        """Enabled rules that can never fire: an earlier stop rule with no identity or
        attribute conditions matches every room they match. Name → the blocking rule."""
        if self._unreachable is not None:
            return self._unreachable
        stops: list[CompiledRule] = []
        blocked: dict[str, str] = {}
        for rule in self.rules:
            if not rule.spec.enabled:
                continue
            for stop in stops:
                if matcher_covers(stop.room, rule.room):
                    blocked[rule.spec.name] = stop.spec.name
                    break
            if rule.spec.stop and rule.identity is None and not rule.attributes:
                stops.append(rule)
        self._unreachable = blocked
        return blocked


def _match(rule: CompiledRule, join: Join) -> tuple[dict[str, str] | None, str]:
    groups = rule.room.match(join.room_name)
    if groups is None:
        return None, f"room '{join.room_name}' does not match {rule.room.describe()}"
    if rule.identity is not None and rule.identity.match(join.participant_identity) is None:
        return None, (f"identity '{join.participant_identity}' does not match {rule.identity.describe()}")
    for key, matcher in rule.attributes:
        value = join.attributes.get(key)
        if value is None:
            return None, f"attribute '{key}' is missing"
        if matcher.match(value) is None:
            return None, f"attribute {key}='{value}' does not match {matcher.describe()}"
    return groups, ""
