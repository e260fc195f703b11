"""Segment rules: what a YAML rule may say, parsed into one typed tree that the compiler turns into SQL (batch) and
into a predicate over counters (real time).

A rule file under ``configs/segments/`` maps segment names to conditions::

    scifi_fans: {count: {event: view, category: Sci-Fi, within: 7d}, gte: 5}
    engaged:    {sessions: {within: 30d}, gte: 4}
    lapsed:     {all: [{count: {within: 90d}, gte: 1}, {count: {within: 30d}, eq: 0}]}
    young_fans: {all: [{attribute: age_band, in: ["18-24", "25-34"]}, {share: {category: Sci-Fi, within: 30d}, gte: 0.3}]}

A condition is ``all: [...]``, ``any: [...]``, ``not: <condition>``, or one measure with one or more comparisons
(all must hold):

=============  =================================================================  ==========================
measure        what it measures over its window                                   comparisons
=============  =================================================================  ==========================
``count``      events, optionally of these ``event`` types, about an item of      gte gt lte lt eq ne
               (or stating) ``category``, on a ``device`` class
``sum``        the sum of the ``value`` of such events (dwell ms, rating stars)   gte gt lte lt eq ne
``sessions``   sessions started (a new one after 30 minutes without an event)     gte gt lte lt eq ne
``share``      the ``category``'s share of the user's such events (0 when none)   gte gt lte lt eq ne (0..1)
``attribute``  the latest stated age_band / gender / country / language           eq ne in
=============  =================================================================  ==========================

Windows (``within``: ``<n>h``, ``<n>d`` or ``<n>w``) are whole UTC hours: ``within: 7d`` evaluated at time T covers the
hour of T and the 167 before it, in batch and in real time alike (one bucket rule, so both give the same answer).
Every event measure needs ``within``, at most the horizon (90 days by default, the longest state kept in real time):
a rule that would scan the lake without a bound is refused. A bad rule raises :class:`RuleError` naming the path of
the bad node (``segments.lapsed.all[1].count.within``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from recstack.data.sources.lake import ITEM_EVENT_TYPES, PAGE_EVENT_TYPES, PROFILE_COLUMNS

HOUR_MS = 3_600_000
DEFAULT_HORIZON_H = 90 * 24
SESSION_GAP_MS = 30 * 60 * 1000
EVENT_TYPES: tuple[str, ...] = (*ITEM_EVENT_TYPES, *PAGE_EVENT_TYPES)
VALUED_EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating", "dwell", "scroll")
DEVICE_CLASSES: tuple[str, ...] = ("desktop", "mobile", "tablet", "bot", "other")
ATTRIBUTES: tuple[str, ...] = PROFILE_COLUMNS
NUMERIC_OPS: dict[str, str] = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<", "eq": "=", "ne": "<>"}
ATTRIBUTE_OPS: tuple[str, ...] = ("eq", "ne", "in")
MEASURES: tuple[str, ...] = ("count", "sum", "sessions", "share", "attribute")
COMBINATORS: tuple[str, ...] = ("all", "any", "not")
_SPEC_KEYS: dict[str, tuple[str, ...]] = {
    "count": ("event", "category", "device", "within"),
    "sum": ("event", "category", "device", "within"),
    "sessions": ("within",),
    "share": ("event", "category", "device", "within"),
}
_WINDOW = re.compile(r"^([1-9][0-9]{0,5})([hdw])$")
_UNIT_H = {"h": 1, "d": 24, "w": 168}
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_DEPTH = 8
MAX_FEATURES = 32


class RuleError(ValueError):
    """A rule that cannot be compiled; ``path`` names the bad node."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


@dataclass(frozen=True)
class Feature:
    """One per-user number a rule reads: an aggregate of the user's events over a window of whole hours."""

    kind: Literal["count", "sum", "sessions"]
    events: tuple[str, ...] = ()  # () = any type
    category: str | None = None
    device: str | None = None
    window_h: int = 24

    @cached_property
    def id(self) -> str:
        """Stable across processes and releases (real-time counters are stored under it); computed once per feature
        (the follower reads it for every event)."""
        text = json.dumps([self.kind, list(self.events), self.category, self.device, self.window_h])
        return f"{self.kind[:3]}_{hashlib.blake2b(text.encode(), digest_size=6).hexdigest()}"

    def matches(self, event_type: str, device_class: str | None, categories: frozenset[str]) -> bool:
        """Whether an event counts towards this feature (sessions are counted by session start, not here)."""
        return (
            (not self.events or event_type in self.events)
            and (self.device is None or device_class == self.device)
            and (self.category is None or self.category in categories)
        )


# ------------------------------------------------------------------------------------------------ the rule tree ---
@dataclass(frozen=True)
class Measure:
    """A number per user: one feature, or for ``share`` a ratio of two (``denominator``)."""

    kind: Literal["count", "sum", "sessions", "share"]
    feature: Feature
    denominator: Feature | None = None


@dataclass(frozen=True)
class Compare:
    measure: Measure
    ops: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class AttributeIs:
    name: str
    ops: tuple[tuple[str, Any], ...]  # ("eq", "x") | ("ne", "x") | ("in", ("a", "b"))


@dataclass(frozen=True)
class All:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


Node = Compare | AttributeIs | All | AnyOf | Not


@dataclass(frozen=True)
class Segment:
    name: str
    rule: Mapping[str, Any] = field(hash=False, compare=False)  # as written (JSON-able)
    node: Node = field(hash=False)
    features: tuple[Feature, ...] = ()
    attributes: tuple[str, ...] = ()
    source: str = ""


# --------------------------------------------------------------------------------------------------- parsing ---
def parse_window(value: Any, path: str, horizon_h: int = DEFAULT_HORIZON_H) -> int:
    """``7d`` -> 168 (hours)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise RuleError(path, f"a window is text like 24h, 7d or 4w; got {value!r}")
    match = _WINDOW.match(value.strip())
    if not match:
        raise RuleError(path, f"bad window {value!r}: write <n>h, <n>d or <n>w with n >= 1 (e.g. 7d)")
    hours = int(match.group(1)) * _UNIT_H[match.group(2)]
    if hours > horizon_h:
        raise RuleError(
            path,
            f"window {value} exceeds the horizon of {horizon_h // 24}d (the longest history kept for segments); "
            "shorten it or raise horizon_days (configs/segments.yaml; segments_horizon_days in configs/serve.yaml)",
        )
    return hours


def _mapping(value: Any, path: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RuleError(path, f"expected {what} (a mapping); got {type(value).__name__} {value!r}")
    return value


def _events(value: Any, path: str) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RuleError(path, f"event is an event type or a list of them; got {value!r}")
    for index, name in enumerate(names):
        if name not in EVENT_TYPES:
            where = path if isinstance(value, str) else f"{path}[{index}]"
            raise RuleError(where, f"unknown event type {name!r}; known: {', '.join(EVENT_TYPES)}")
    return tuple(sorted(set(names)))


def _text(value: Any, path: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise RuleError(path, f"{what} is non-empty text (at most 128 characters); got {value!r}")
    return value


def _feature(kind: str, spec: Mapping[str, Any], path: str, horizon_h: int) -> Feature:
    allowed = _SPEC_KEYS[kind]
    for key in spec:
        if key not in allowed:
            raise RuleError(f"{path}.{key}", f"unknown field {key!r} for {kind}; allowed: {', '.join(allowed)}")
    if "within" not in spec:
        raise RuleError(
            f"{path}.within",
            f"{kind} needs `within` (a window such as 7d): without a bound the rule would scan all history",
        )
    window = parse_window(spec["within"], f"{path}.within", horizon_h)
    events = _events(spec["event"], f"{path}.event") if "event" in spec else ()
    category = _text(spec["category"], f"{path}.category", "category") if "category" in spec else None
    device = spec.get("device")
    if device is not None and device not in DEVICE_CLASSES:
        raise RuleError(f"{path}.device", f"unknown device class {device!r}; known: {', '.join(DEVICE_CLASSES)}")
    if kind == "sum":
        if not events:
            raise RuleError(f"{path}.event", "sum needs `event`: the type(s) whose value is summed (e.g. dwell)")
        unvalued = [e for e in events if e not in VALUED_EVENT_TYPES]
        if unvalued:
            raise RuleError(
                f"{path}.event", f"{unvalued[0]!r} events carry no summable value; use {', '.join(VALUED_EVENT_TYPES)}"
            )
    if kind == "share" and category is None:
        raise RuleError(f"{path}.category", "share needs `category`: the share of the user's events it measures")
    return Feature(
        "sessions" if kind == "sessions" else "sum" if kind == "sum" else "count", events, category, device, window
    )


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RuleError(path, f"type mismatch: this measure is a number, so compare it with a number; got {value!r}")
    return float(value)


def _node(raw: Any, path: str, horizon_h: int, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise RuleError(path, f"the rule nests deeper than {MAX_DEPTH} levels; flatten it with all/any")
    node = _mapping(raw, path, "a condition")
    heads = [k for k in node if k in COMBINATORS or k in MEASURES]
    if len(heads) != 1:
        unknown = [k for k in node if k not in COMBINATORS and k not in MEASURES and k not in NUMERIC_OPS and k != "in"]
        if unknown:
            raise RuleError(
                f"{path}.{unknown[0]}",
                f"unknown field {unknown[0]!r}; a condition is one of {', '.join(COMBINATORS + MEASURES)} "
                "(a measure with comparisons such as gte)",
            )
        raise RuleError(
            path, f"a condition needs exactly one of {', '.join(COMBINATORS + MEASURES)}; got {sorted(node) or 'none'}"
        )
    head = heads[0]
    if head in COMBINATORS:
        if len(node) != 1:
            extra = next(k for k in node if k != head)
            raise RuleError(f"{path}.{extra}", f"unknown field {extra!r} beside {head!r}; put it inside a condition")
        if head == "not":
            return Not(_node(node[head], f"{path}.not", horizon_h, depth + 1))
        children = node[head]
        if not isinstance(children, list) or not children:
            raise RuleError(f"{path}.{head}", f"{head} takes a non-empty list of conditions; got {children!r}")
        parsed = tuple(_node(c, f"{path}.{head}[{i}]", horizon_h, depth + 1) for i, c in enumerate(children))
        return All(parsed) if head == "all" else AnyOf(parsed)
    comparisons = {k: v for k, v in node.items() if k != head}
    if head == "attribute":
        name = node[head]
        if name not in ATTRIBUTES:
            raise RuleError(f"{path}.attribute", f"unknown attribute {name!r}; known: {', '.join(ATTRIBUTES)}")
        ops: list[tuple[str, Any]] = []
        for op, value in comparisons.items():
            where = f"{path}.{op}"
            if op in NUMERIC_OPS and op not in ATTRIBUTE_OPS:
                raise RuleError(where, f"type mismatch: {name} is text, compare it with eq, ne or in (not {op})")
            if op not in ATTRIBUTE_OPS:
                raise RuleError(where, f"unknown field {op!r}; an attribute takes eq, ne or in")
            if op == "in":
                if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                    raise RuleError(where, f"type mismatch: in takes a non-empty list of text values; got {value!r}")
                ops.append((op, tuple(value)))
            else:
                if not isinstance(value, str):
                    raise RuleError(where, f"type mismatch: {name} is text; got {value!r}")
                ops.append((op, value))
        if not ops:
            raise RuleError(path, f"attribute {name} needs a comparison: eq, ne or in")
        return AttributeIs(name, tuple(ops))
    spec = _mapping(node[head], f"{path}.{head}", f"the {head} settings")
    feature = _feature(head, spec, f"{path}.{head}", horizon_h)
    denominator = None
    if head == "share":
        denominator = Feature("count", feature.events, None, feature.device, feature.window_h)
    numeric: list[tuple[str, float]] = []
    for op, value in comparisons.items():
        where = f"{path}.{op}"
        if op == "in":
            raise RuleError(where, f"type mismatch: {head} is a number; compare it with {', '.join(NUMERIC_OPS)}")
        if op not in NUMERIC_OPS:
            raise RuleError(where, f"unknown field {op!r}; compare {head} with {', '.join(NUMERIC_OPS)}")
        number = _number(value, where)
        if head == "share" and not 0.0 <= number <= 1.0:
            raise RuleError(where, f"a share is between 0 and 1; got {value!r}")
        numeric.append((op, number))
    if not numeric:
        raise RuleError(path, f"{head} needs a comparison: one of {', '.join(NUMERIC_OPS)} (e.g. gte: 5)")
    return Compare(Measure(head, feature, denominator), tuple(numeric))  # type: ignore[arg-type]


def walk(node: Node):
    """Every node of a tree, depth first."""
    yield node
    if isinstance(node, All | AnyOf):
        for child in node.children:
            yield from walk(child)
    elif isinstance(node, Not):
        yield from walk(node.child)


def parse_rule(name: str, rule: Any, horizon_h: int = DEFAULT_HORIZON_H, source: str = "") -> Segment:
    """One named rule -> a :class:`Segment` (RuleError naming the bad node's path otherwise)."""
    path = f"segments.{name}"
    if not isinstance(name, str) or not NAME.match(name):
        raise RuleError(path, "a segment name is lower-case letters, digits and _ (starting with a letter, <= 63)")
    node = _node(rule, path, horizon_h, 0)
    features: dict[str, Feature] = {}
    attributes: list[str] = []
    for part in walk(node):
        if isinstance(part, Compare):
            for feature in (part.measure.feature, part.measure.denominator):
                if feature is not None:
                    features.setdefault(feature.id, feature)
        elif isinstance(part, AttributeIs) and part.name not in attributes:
            attributes.append(part.name)
    if len(features) > MAX_FEATURES:
        raise RuleError(path, f"the rule reads {len(features)} measures; at most {MAX_FEATURES}")
    plain = json.loads(json.dumps(rule))  # a detached, JSON-able copy (what GET /segments shows)
    return Segment(name, plain, node, tuple(features.values()), tuple(attributes), source)


def parse_segments(mapping: Any, horizon_h: int = DEFAULT_HORIZON_H, source: str = "") -> dict[str, Segment]:
    """A rule file's mapping (name -> condition) -> segments by name."""
    if not isinstance(mapping, Mapping):
        raise RuleError("segments", f"a rule file maps segment names to conditions; got {type(mapping).__name__}")
    return {name: parse_rule(name, rule, horizon_h, source) for name, rule in mapping.items()}


def load_segments(directory: str | Path, horizon_h: int = DEFAULT_HORIZON_H) -> dict[str, Segment]:
    """Every ``*.yaml`` under ``directory`` (a name defined twice is an error naming both files)."""
    import yaml

    root = Path(directory).expanduser()
    if not root.is_dir():
        raise RuleError("segments", f"no segment rules folder at {root}; create it or set segments.rules=")
    out: dict[str, Segment] = {}
    for path in sorted(root.glob("*.yaml")):
        try:
            mapping = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise RuleError(str(path), f"not valid YAML ({' '.join(str(error).split())})") from None
        try:
            parsed = parse_segments(mapping, horizon_h, source=str(path))
        except RuleError as error:
            raise RuleError(f"{path.name}: {error.path}", error.reason) from None
        for name, segment in parsed.items():
            if name in out:
                raise RuleError(f"segments.{name}", f"defined twice: {out[name].source} and {path}")
            out[name] = segment
    return out


def all_features(segments: Mapping[str, Segment]) -> dict[str, Feature]:
    """The distinct features a set of segments reads, by id."""
    out: dict[str, Feature] = {}
    for segment in segments.values():
        for feature in segment.features:
            out.setdefault(feature.id, feature)
    return out
