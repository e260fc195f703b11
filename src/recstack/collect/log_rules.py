"""Which logged requests are events: a YAML list of rules, each a regular expression over the request target (path
and query string, as logged) that names the item, checked in order; the first match wins.

::

    - pattern: '^/movie/(?P<item>[0-9]+)\\?(?:.*&)?src=rec'   # named group `item` required, `user` optional
      event_type: click                                       # view | click | add_to_cart | purchase
      methods: [GET]                                          # optional; any method when absent
      status: [2xx]                                           # optional; 2xx when absent. Nxx, a code, or `any`
    - pattern: '^/movie/(?P<item>[0-9]+)'
      event_type: view

Patterns are RE2 (what Arrow runs, vectorised): ``(?P<name>...)`` groups, no look-around or back-references; a
group that names nothing must be ``(?:...)``. They search the target, so anchor them (``^...``) to mean a prefix.
A request no rule matches (assets, health checks) is skipped and counted; a request a rule matches but whose status
the rule does not accept (404s on product pages) is counted apart. Bad rules are a :class:`RulesError` that says
which rule and what to change, before any line is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# The event types of recstack.collect.events that need no value: a log line has an item and a time, nothing else.
LOG_EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
MAX_ITEM_CHARS = 128  # as at the API door (recstack.collect.events.MAX_ID); a longer capture is no match
_GROUPS = frozenset({"item", "user"})
_KEYS = frozenset({"pattern", "event_type", "methods", "status"})


class RulesError(ValueError):
    """A rules file that cannot be used as written."""


@dataclass(frozen=True)
class LogRule:
    pattern: str
    event_type: str
    methods: tuple[str, ...] | None = None  # None: any method
    status: tuple[tuple[int, int], ...] = ((200, 299),)  # inclusive ranges
    has_user: bool = False  # the pattern has a (?P<user>...) group


@dataclass(frozen=True)
class RuleMatches:
    """The requests some rule matched, in row order: ``rows`` index the input, the other fields are aligned to it."""

    rows: np.ndarray  # int64 row indices
    rule: np.ndarray  # int16 index of the rule that matched
    item: pa.Array  # string
    user: pa.Array  # string; null where the rule has no `user` group or it captured nothing
    status_ok: np.ndarray  # bool: the status is one the rule accepts


def load_rules(path: str | Path) -> tuple[LogRule, ...]:
    """The rules of a YAML file, validated."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RulesError(f"no such rules file: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise RulesError(f"rules file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    return parse_rules(data, str(path))


def parse_rules(data: object, source: str = "rules") -> tuple[LogRule, ...]:
    if not isinstance(data, list) or not data:
        raise RulesError(f"{source}: expected a non-empty YAML list of rules (- pattern: ... event_type: ...)")
    return tuple(_rule(entry, f"{source}, rule {number}") for number, entry in enumerate(data, 1))


def _rule(entry: object, where: str) -> LogRule:
    if not isinstance(entry, dict):
        raise RulesError(f"{where}: expected a mapping with pattern and event_type, got {entry!r}")
    unknown = set(entry) - _KEYS
    if unknown:
        raise RulesError(f"{where}: unknown key(s) {sorted(map(str, unknown))}; a rule has {sorted(_KEYS)}")
    pattern, event_type = entry.get("pattern"), entry.get("event_type")
    if not isinstance(pattern, str) or not pattern:
        raise RulesError(f"{where}: pattern must be a regular expression string")
    if event_type not in LOG_EVENT_TYPES:
        raise RulesError(f"{where}: unknown event_type {event_type!r}; use one of {list(LOG_EVENT_TYPES)}")
    try:
        groups = pc.extract_regex(pa.array([], pa.string()), pattern).type
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        hint = " (write (?:...) for a group that names nothing)" if "unnamed" in str(error) else ""
        raise RulesError(f"{where}: bad pattern {pattern!r}: {error}{hint}") from None
    names = {field.name for field in groups}
    if "item" not in names:
        raise RulesError(f"{where}: pattern {pattern!r} has no (?P<item>...) group naming the item")
    if names - _GROUPS:
        raise RulesError(f"{where}: pattern {pattern!r} names group(s) {sorted(names - _GROUPS)}; only item and user")
    methods, status = _methods(entry.get("methods"), where), _status(entry.get("status"), where)
    return LogRule(pattern, event_type, methods, status, has_user="user" in names)


def _methods(value: object, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m.isalpha() for m in value):
        raise RulesError(f"{where}: methods must be a list of HTTP methods, e.g. [GET, POST]")
    return tuple(sorted({m.upper() for m in value}))


def _status(value: object, where: str) -> tuple[tuple[int, int], ...]:
    if value is None:
        return ((200, 299),)
    out = []
    for code in value if isinstance(value, list) and value else [value]:
        text = str(code).lower()
        if text == "any":
            out.append((100, 599))
        elif re.fullmatch(r"[1-5]xx", text):
            out.append((int(text[0]) * 100, int(text[0]) * 100 + 99))
        elif re.fullmatch(r"[1-5][0-9][0-9]", text):
            out.append((int(text), int(text)))
        else:
            raise RulesError(f"{where}: status {code!r} is not a code (200), a class (2xx) or `any`")
    return tuple(out)


def apply_rules(rules: tuple[LogRule, ...], method: pa.Array, target: pa.Array, status: pa.Array) -> RuleMatches:
    """Each row's first matching rule: per rule, one match over the whole column (RE2's DFA, no copies), then the
    groups extracted from the rows that match and that no earlier rule took."""
    free = np.ones(len(target), bool)
    found: list[tuple[np.ndarray, int, pa.Array, pa.Array]] = []
    allowed: dict[tuple[str, ...], np.ndarray] = {}
    for index, rule in enumerate(rules):
        candidate = free & _true(pc.match_substring_regex(target, rule.pattern))
        if rule.methods is not None:
            if rule.methods not in allowed:
                allowed[rule.methods] = _true(pc.is_in(method, pa.array(rule.methods, method.type)))
            candidate &= allowed[rule.methods]
        rows = np.flatnonzero(candidate)
        if not len(rows):
            continue
        extracted = pc.extract_regex(target.take(pa.array(rows)), rule.pattern)
        item = pc.struct_field(extracted, "item")
        length = pc.utf8_length(item)
        hit = pc.and_(pc.greater(length, 0), pc.less_equal(length, MAX_ITEM_CHARS)).fill_null(False)
        hit_np = hit.to_numpy(zero_copy_only=False)
        user = pc.struct_field(extracted, "user") if rule.has_user else pa.nulls(len(rows), item.type)
        found.append((rows[hit_np], index, item.filter(hit), user.filter(hit)))
        free[rows[hit_np]] = False
    if not found:
        none = pa.array([], pa.string())
        return RuleMatches(np.zeros(0, np.int64), np.zeros(0, np.int16), none, none, np.zeros(0, bool))
    rows = np.concatenate([f[0] for f in found])
    order = np.argsort(rows, kind="stable")
    rule = np.concatenate([np.full(len(f[0]), f[1], np.int16) for f in found])[order]
    rows = rows[order]
    item = pa.concat_arrays([f[2].cast(pa.string()) for f in found]).take(pa.array(order))
    user = pa.concat_arrays([f[3].cast(pa.string()) for f in found]).take(pa.array(order))
    codes = status.take(pa.array(rows)).to_numpy(zero_copy_only=False)
    status_ok = np.zeros(len(rows), bool)
    for index, rule_ in enumerate(rules):
        mine = rule == index
        for low, high in rule_.status:
            status_ok[mine] |= (codes[mine] >= low) & (codes[mine] <= high)
    return RuleMatches(rows, rule, item, pc.if_else(pc.equal(user, ""), pa.scalar(None, pa.string()), user), status_ok)


def _true(mask: pa.Array) -> np.ndarray:
    return mask.fill_null(False).to_numpy(zero_copy_only=False)
