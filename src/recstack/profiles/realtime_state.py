"""The pure half of the real-time segment follower (recstack.profiles.realtime): stream entries -> events, a user's
counter hash -> state, events -> counter changes, and state -> membership. No Redis here, so it is tested and timed
without one.

A user's counters hash (recstack.collect.records.counters_key) holds:

=====================  ===================================================================================
``<feature id>@<b>``   the feature's total in hour bucket ``b`` (``ts_ms // 3_600_000``): +1 per matching event
                       for count, + value for sum, +1 per session start for sessions
``_last``              the latest event time applied (ms): the session rule's "previous event"
``_attr:<name>``       the latest stated value of a demographic attribute (age_band, gender, country, language)
``_attr_at:<name>``    its order key ``<ts_ms>:<event_id>`` (latest wins, as in the batch's arg_max)
``_profiled``          ``1`` once any profile event was seen (the batch evaluates such users even without events)
``_alias``             on an anonymous visitor's hash only: the user it was identified as (its counters moved)
=====================  ===================================================================================
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from recstack.collect.records import ROWS_FIELD, TABLE_FIELD
from recstack.data.sources.lake import PROFILE_COLUMNS, event_time_ms
from recstack.profiles.compile import feature_updates, feature_value, in_population, window_start_bucket
from recstack.profiles.realtime_predicate import compile_predicate
from recstack.profiles.rules import HOUR_MS, SESSION_GAP_MS, Feature, Segment, all_features

LAST = "_last"
PROFILED = "_profiled"
ALIAS = "_alias"
ATTR = "_attr:"
ATTR_AT = "_attr_at:"

EntryId = tuple[int, int]


def parse_id(entry_id: str) -> EntryId:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Event(NamedTuple):
    """One lake event row as the follower needs it (bots already dropped). Immutable like a frozen dataclass, but
    built as a tuple: a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, and the
    follower builds one per event."""

    entry_ms: int  # when the collector added the entry (the entry id's ms): the start of the latency measured
    event_id: str
    subject: str
    anonymous: bool
    item_id: str | None
    event_type: str
    value: float | None
    ts_ms: int  # event time (recstack.data.sources.lake.event_time_ms)
    category: str | None  # stated (preference events), not the item's
    device_class: str | None
    attributes: tuple[tuple[str, str], ...] = ()  # non-null demographic columns of a profile event


@dataclass(frozen=True, slots=True)
class Alias:
    """An anonymous visitor identified as a user (the ``aliases`` table)."""

    entry_ms: int
    anonymous_id: str
    user_id: str


@dataclass
class Decoded:
    """Entries read in stream order, cut into runs: a list of events, or one alias (applied on its own)."""

    runs: list[list[Event] | Alias] = field(default_factory=list)
    bots: int = 0
    malformed: int = 0
    ignored: int = 0  # rows of other tables (audit)


def decode_entries(entries: Iterable[tuple[str, Mapping[bytes, bytes] | None]]) -> Decoded:
    """Stream entries -> events and aliases. A malformed entry or row is counted and skipped: the lake consumer keeps
    it under ``_rejected/`` and the batch run never sees it either."""
    out = Decoded()
    current: list[Event] = []
    for entry_id, fields in entries:
        if not fields:
            out.malformed += 1
            continue
        table = fields.get(TABLE_FIELD, b"")
        if table not in (b"events", b"aliases"):
            out.ignored += 1
            continue
        entry_ms = parse_id(entry_id)[0]
        try:
            rows = json.loads(fields[ROWS_FIELD])
            if not isinstance(rows, list):
                raise TypeError("rows are not a list")
        except (KeyError, ValueError, TypeError):
            out.malformed += 1
            continue
        if table == b"aliases":
            for row in rows:
                try:
                    alias = Alias(entry_ms, str(row["anonymous_id"]), str(row["user_id"]))
                except (KeyError, TypeError):
                    out.malformed += 1
                    continue
                if current:
                    out.runs.append(current)
                    current = []
                out.runs.append(alias)
            continue
        for row in rows:
            try:
                if row.get("device_class") == "bot":
                    out.bots += 1
                    continue
                event_type = row["event_type"]
                value = row.get("value")
                attributes: tuple[tuple[str, str], ...] = ()
                if event_type == "profile":
                    attributes = tuple((c, str(row[c])) for c in PROFILE_COLUMNS if row.get(c) is not None)
                current.append(
                    Event(
                        entry_ms,
                        str(row["event_id"]),
                        str(row["user_id"]),
                        bool(row.get("anonymous", False)),
                        row.get("item_id"),
                        str(event_type),
                        None if value is None else float(value),
                        event_time_ms(row.get("client_ts"), int(row["received_ts"])),
                        row.get("category"),
                        row.get("device_class"),
                        attributes,
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                out.malformed += 1
    if current:
        out.runs.append(current)
    return out


# ------------------------------------------------------------------------------------------------ user state ---
@dataclass
class UserState:
    """One user's counters hash, parsed (a working copy: the follower changes it, then writes the changed fields)."""

    last_ms: int | None = None
    buckets: dict[str, dict[int, float]] = field(default_factory=dict)  # feature id -> bucket -> total
    attributes: dict[str, str] = field(default_factory=dict)
    attribute_at: dict[str, tuple[int, str]] = field(default_factory=dict)
    profiled: bool = False
    alias: str | None = None
    fields: int = 0  # fields in the hash as read
    pruned_hour: int | None = None  # the hour old buckets were last dropped at (once an hour is enough)
    # feature values (compile.feature_value) as of the hour ``values_hour``; a feature an event touches is dropped
    values: dict[str, float] = field(default_factory=dict)
    values_hour: int | None = None

    @classmethod
    def parse(cls, raw: list[bytes] | Mapping[bytes, bytes] | None) -> UserState:
        """From an HGETALL reply (a flat list of field, value, ... or a mapping)."""
        state = cls()
        if not raw:
            return state
        pairs = raw.items() if isinstance(raw, Mapping) else zip(raw[::2], raw[1::2], strict=True)
        for key, value in pairs:
            name = key.decode()
            state.fields += 1
            if name[0] != "_":
                fid, _, bucket = name.rpartition("@")
                state.buckets.setdefault(fid, {})[int(bucket)] = float(value)
            elif name == LAST:
                state.last_ms = int(value)
            elif name.startswith(ATTR):
                state.attributes[name[len(ATTR) :]] = value.decode()
            elif name.startswith(ATTR_AT):
                ts, _, event_id = value.decode().partition(":")
                state.attribute_at[name[len(ATTR_AT) :]] = (int(ts), event_id)
            elif name == PROFILED:
                state.profiled = True
            elif name == ALIAS:
                state.alias = value.decode()
        return state

    @property
    def has_attributes(self) -> bool:
        return self.profiled


@dataclass
class Change:
    """What applying events did to one user: the hash fields to write and which rule inputs moved."""

    fields: dict[str, str] = field(default_factory=dict)  # HSET mapping (absolute values)
    segments: frozenset[str] = frozenset()  # the segments whose inputs (features, attributes) moved
    attributes: set[str] = field(default_factory=set)  # attributes changed
    first_seen: bool = False  # the user was outside the population (no event in the horizon): every segment may change


@dataclass(frozen=True, slots=True)
class Plan:
    """What every event of one kind (type, value or not, device, categories, new session or not) does: the counters
    it adds 1 to (counts, sessions) and its value to (sums), as ``(feature id, feature id + "@", window in hours)``,
    and the segments reading them."""

    ones: tuple[tuple[str, str, int], ...]
    sums: tuple[tuple[str, str, int], ...]
    segments: frozenset[str]


class RuleSet:
    """The segments the follower applies, with what it needs per event worked out once: feature ids (computing one
    hashes the feature), per kind of event the counters it moves and the segments reading them (a bounded memo in
    front of compile.feature_updates), and each rule as a generated function (realtime_predicate)."""

    MEMO = 200_000

    def __init__(self, segments: Mapping[str, Segment]) -> None:
        self.segments = dict(segments)
        self.order = tuple(sorted(self.segments))  # membership writes list segments in this order
        self.features = tuple(all_features(self.segments).values())
        self.by_feature, self.by_attribute = segment_index(self.segments)
        self.reads = {name: tuple((f.id, f) for f in s.features) for name, s in self.segments.items()}
        self.predicates = {name: compile_predicate(s) for name, s in self.segments.items()}
        self._plans: dict[tuple, Plan] = {}
        self._ordered: dict[frozenset[str], tuple[str, ...]] = {}
        self._union_reads: dict[tuple[str, ...], tuple[tuple[str, Feature], ...]] = {}

    def plan(
        self, event_type: str, has_value: bool, device: str | None, categories: frozenset[str], new_session: bool
    ) -> Plan:
        """compile.feature_updates for an event of this kind: the features it touches do not depend on its value,
        only a sum's amount does (the caller adds the event's value to a sum, 1 to the others)."""
        key = (event_type, has_value, device, categories, new_session)
        plan = self._plans.get(key)
        if plan is None:
            probe = 1.0 if has_value else None
            found = feature_updates(self.features, event_type, probe, device, categories, new_session)
            ones = tuple((f.id, f"{f.id}@", f.window_h) for f, _ in found if f.kind != "sum")
            sums = tuple((f.id, f"{f.id}@", f.window_h) for f, _ in found if f.kind == "sum")
            names = frozenset(n for f, _ in found for n in self.by_feature.get(f.id, ()))
            if len(self._plans) >= self.MEMO:
                self._plans.clear()
            plan = self._plans[key] = Plan(ones, sums, names)
        return plan

    def ordered(self, names: frozenset[str]) -> tuple[str, ...]:
        """``names`` in the rule set's order (a few distinct sets recur: remembered)."""
        out = self._ordered.get(names)
        if out is None:
            if len(self._ordered) >= self.MEMO:
                self._ordered.clear()
            out = self._ordered[names] = tuple(n for n in self.order if n in names)
        return out

    def union_reads(self, names: tuple[str, ...]) -> tuple[tuple[str, Feature], ...]:
        """The features the segments ``names`` read, each once."""
        out = self._union_reads.get(names)
        if out is None:
            seen: dict[str, Feature] = {}
            for name in names:
                for fid, feature in self.reads[name]:
                    seen.setdefault(fid, feature)
            if len(self._union_reads) >= self.MEMO:
                self._union_reads.clear()
            out = self._union_reads[names] = tuple(seen.items())
        return out


def apply_events(
    state: UserState,
    events: Iterable[Event],
    rules: RuleSet,
    categories: Mapping[str, frozenset[str]],
    horizon_h: int,
    gap_ms: int = SESSION_GAP_MS,
) -> Change:
    """Add events (of this user, in stream order) to its state and say which fields changed.

    Sessions follow arrival order: an event older than ``_last`` (out of order) is counted in its own hour but never
    starts a session, where the batch, sorting by time, might split the sessions differently. The batch run is the
    authority; such events are rare (a client's queue flushed late).

    The cached feature values (``state.values``, as of the hour ``values_hour``) follow: a count or a session count
    adds the event's 1 when its bucket is inside the feature's window at that hour (whole numbers: exact in a float);
    a sum is dropped and summed afresh from its buckets when read, so its float is the one feature_value gives."""
    events = list(events)
    change = Change()
    if events and not state.profiled:  # outside the population until now: every segment may change
        change.first_seen = not in_population(state.last_ms, False, events[0].ts_ms, horizon_h)
    empty: frozenset[str] = frozenset()
    fields = change.fields
    buckets = state.buckets
    values = state.values
    hour = state.values_hour
    segments: frozenset[str] = empty
    for event in events:
        ts = event.ts_ms
        last = state.last_ms
        new_session = last is None or ts - last > gap_ms
        cats = categories.get(event.item_id, empty) if event.item_id is not None else empty
        if event.category is not None:
            cats = cats | {event.category}
        bucket = ts // HOUR_MS
        suffix = str(bucket)
        value = event.value
        plan = rules.plan(event.event_type, value is not None, event.device_class, cats, new_session)
        current = bucket == hour  # the usual case: inside every window as of the cached values' hour
        for fid, prefix, window_h in plan.ones:
            counts = buckets.get(fid)
            if counts is None:
                counts = buckets[fid] = {}
            total = counts.get(bucket, 0.0) + 1.0
            counts[bucket] = total
            fields[prefix + suffix] = repr(total)
            if fid in values and (current or hour - window_h < bucket <= hour):  # type: ignore[operator]
                values[fid] += 1.0
        for fid, prefix, _ in plan.sums:
            counts = buckets.get(fid)
            if counts is None:
                counts = buckets[fid] = {}
            total = counts.get(bucket, 0.0) + value  # type: ignore[operator]
            counts[bucket] = total
            fields[prefix + suffix] = repr(total)
            values.pop(fid, None)
        segments = plan.segments if not segments else segments | plan.segments
        if last is None or ts > last:
            state.last_ms = ts
            fields[LAST] = str(ts)
        if event.event_type == "profile":
            if not state.profiled:
                state.profiled = True
                fields[PROFILED] = "1"
                change.attributes.update(PROFILE_COLUMNS)  # the user joins the population of attribute rules
            order = (ts, event.event_id)
            for name, value in event.attributes:
                if name not in state.attribute_at or order > state.attribute_at[name]:
                    state.attribute_at[name] = order
                    fields[ATTR_AT + name] = f"{order[0]}:{order[1]}"
                    if state.attributes.get(name) != value:
                        state.attributes[name] = value
                        change.attributes.add(name)
                    fields[ATTR + name] = value
    if change.attributes:
        segments = segments | {n for a in change.attributes for n in rules.by_attribute.get(a, ())}
    change.segments = segments
    return change


def merge_states(target: UserState, source: UserState) -> dict[str, str]:
    """Move an anonymous visitor's counters into the user it was identified as; returns the target's changed fields.
    Buckets add up; attributes keep the latest; ``_last`` the later. The sessions of the two are counted apart (the
    batch, merging timelines, may count fewer)."""
    fields: dict[str, str] = {}
    target.values.clear()
    for fid, counts in source.buckets.items():
        mine = target.buckets.setdefault(fid, {})
        for bucket, value in counts.items():
            mine[bucket] = mine.get(bucket, 0.0) + value
            fields[f"{fid}@{bucket}"] = repr(mine[bucket])
    if source.last_ms is not None and (target.last_ms is None or source.last_ms > target.last_ms):
        target.last_ms = source.last_ms
        fields[LAST] = str(source.last_ms)
    if source.profiled and not target.profiled:
        target.profiled = True
        fields[PROFILED] = "1"
    for name, order in source.attribute_at.items():
        if name not in target.attribute_at or order > target.attribute_at[name]:
            target.attribute_at[name] = order
            fields[ATTR_AT + name] = f"{order[0]}:{order[1]}"
            if name in source.attributes:
                target.attributes[name] = source.attributes[name]
                fields[ATTR + name] = source.attributes[name]
    return fields


# ------------------------------------------------------------------------------------------------ membership ---
def segments_to_evaluate(change: Change, rules: RuleSet) -> tuple[str, ...]:
    """The segments whose membership the change may have moved, in the rule set's order."""
    return rules.order if change.first_seen else rules.ordered(change.segments)


def feature_values(state: UserState, rules: RuleSet, names: tuple[str, ...], as_of_ms: int) -> dict[str, float]:
    """The values (compile.feature_value) of the features the segments ``names`` read, as of ``as_of_ms``'s hour:
    cached in ``state`` (a value depends on the hour only; apply_events keeps the cache current)."""
    hour = as_of_ms // HOUR_MS
    if state.values_hour != hour:
        state.values = {}
        state.values_hour = hour
    values = state.values
    buckets = state.buckets
    for fid, feature in rules.union_reads(names):
        if fid not in values:
            counts = buckets.get(fid)
            values[fid] = feature_value(feature, counts, as_of_ms) if counts else 0.0  # most are empty
    return values


def members(state: UserState, names: Iterable[str], rules: RuleSet, as_of_ms: int, horizon_h: int) -> dict[str, bool]:
    """Membership of ``state``'s user in each named segment at ``as_of_ms`` (compile.evaluate over the windows'
    sums, compile.feature_value)."""
    names = tuple(names)
    if not in_population(state.last_ms, state.has_attributes, as_of_ms, horizon_h):
        return dict.fromkeys(names, False)
    values = feature_values(state, rules, names, as_of_ms)
    attributes = state.attributes
    predicates = rules.predicates
    return {name: predicates[name](values, attributes) for name in names}


def membership_changes(
    state: UserState, names: tuple[str, ...], rules: RuleSet, as_of_ms: int, horizon_h: int, now: set[str]
) -> tuple[list[str], list[str]]:
    """The segments of ``names`` the user enters and leaves at ``as_of_ms``, given those it is in ``now``."""
    if not in_population(state.last_ms, state.has_attributes, as_of_ms, horizon_h):
        return [], [n for n in names if n in now]
    values = feature_values(state, rules, names, as_of_ms)
    attributes = state.attributes
    predicates = rules.predicates
    entered: list[str] = []
    left: list[str] = []
    for name in names:
        if predicates[name](values, attributes):
            if name not in now:
                entered.append(name)
        elif name in now:
            left.append(name)
    return entered, left


def stale_fields(state: UserState, as_of_ms: int, horizon_h: int) -> list[str]:
    """Bucket fields older than any window can reach at ``as_of_ms`` (dropped from the hash and from ``state``)."""
    low = window_start_bucket(as_of_ms, horizon_h)
    out = []
    for fid, counts in state.buckets.items():
        old = [b for b in counts if b < low]
        for bucket in old:
            del counts[bucket]
            out.append(f"{fid}@{bucket}")
    return out


def segment_index(segments: Mapping[str, Segment]) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """feature id -> segments reading it, attribute -> segments reading it."""
    by_feature: dict[str, list[str]] = {}
    by_attribute: dict[str, list[str]] = {}
    for name, segment in segments.items():
        for feature in segment.features:
            by_feature.setdefault(feature.id, []).append(name)
        for attribute in segment.attributes:
            by_attribute.setdefault(attribute, []).append(name)
    return (
        {k: tuple(v) for k, v in by_feature.items()},
        {k: tuple(v) for k, v in by_attribute.items()},
    )
