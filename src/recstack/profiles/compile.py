"""The one compiler of segment rules (recstack.profiles.rules): a rule becomes SQL for the batch run and a predicate
over counters for the real-time follower, from the same tree and the same window rule, so both give one answer.

Both sides compute the same per-user numbers, the rules' :class:`~recstack.profiles.rules.Feature` values:

* batch (:func:`features_sql`): aggregates over the DuckDB ``events`` / ``item_categories`` tables
  (recstack.profiles.source), one column ``f_<id>`` per feature, plus the latest attributes; the same text runs on
  Spark translated by sqlglot (recstack.profiles.segments_spark), so it is written in SQL both dialects accept;
* real time (:func:`feature_updates`, :func:`feature_value`): the follower adds each event to hour-bucket counters
  in Redis and sums the buckets of a window when it evaluates.

Then one predicate over those numbers decides membership: :func:`predicate_sql` (a boolean SQL expression over the
``f_<id>`` and attribute columns) and :func:`evaluate` (the same comparisons in Python). Counts compare exactly
(integers); a share is ``num / den`` in IEEE doubles on both sides. The ``sum`` of fractional values may differ in the
last bits between the two (addition order), which matters only for a value exactly at a threshold.

Who is evaluated (:func:`in_population`): users with an event in the horizon, or with a stated attribute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from recstack.profiles.rules import (
    HOUR_MS,
    SESSION_GAP_MS,
    All,
    AnyOf,
    AttributeIs,
    Compare,
    Feature,
    Measure,
    Node,
    Not,
    Segment,
)

_PY_OPS = {
    "gte": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "lte": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
}
_SQL_OPS = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<", "eq": "=", "ne": "<>"}


def column(feature: Feature) -> str:
    """The batch column of a feature."""
    return f"f_{feature.id}"


def window_start_bucket(as_of_ms: int, window_h: int) -> int:
    """The first hour bucket inside a window that ends with the hour of ``as_of_ms`` (buckets are ms // 1 h)."""
    return as_of_ms // HOUR_MS - window_h + 1


# ------------------------------------------------------------------------------------------------- real time ---
def feature_updates(
    features: Iterable[Feature],
    event_type: str,
    value: float | None,
    device_class: str | None,
    categories: frozenset[str],
    new_session: bool,
) -> list[tuple[Feature, float]]:
    """What one event adds to each feature's counter in its hour bucket (features it does not touch are left out)."""
    out: list[tuple[Feature, float]] = []
    for feature in features:
        if feature.kind == "sessions":
            if new_session:
                out.append((feature, 1.0))
        elif feature.matches(event_type, device_class, categories):
            if feature.kind == "count":
                out.append((feature, 1.0))
            elif value is not None:
                out.append((feature, float(value)))
    return out


def is_new_session(last_ms: int | None, ts_ms: int, gap_ms: int = SESSION_GAP_MS) -> bool:
    """A session starts at a user's first event and after more than ``gap_ms`` without one."""
    return last_ms is None or ts_ms - last_ms > gap_ms


def feature_value(feature: Feature, buckets: Mapping[int, float], as_of_ms: int) -> float:
    """The feature's value at ``as_of_ms`` from its hour-bucket counters (bucket -> value)."""
    low = window_start_bucket(as_of_ms, feature.window_h)
    high = as_of_ms // HOUR_MS
    return float(sum(v for b, v in buckets.items() if low <= b <= high))


def in_population(last_ms: int | None, has_attributes: bool, as_of_ms: int, horizon_h: int) -> bool:
    """Whether a user is evaluated at all: an event in the horizon's buckets, or a stated attribute."""
    if has_attributes:
        return True
    return last_ms is not None and last_ms // HOUR_MS >= window_start_bucket(as_of_ms, horizon_h)


def _measure(measure: Measure, values: Mapping[str, float]) -> float:
    value = values.get(measure.feature.id, 0.0)
    if measure.denominator is None:
        return float(value)
    total = float(values.get(measure.denominator.id, 0.0))
    return float(value) / total if total > 0 else 0.0


def evaluate(segment: Segment | Node, values: Mapping[str, float], attributes: Mapping[str, str | None]) -> bool:
    """Membership from feature values (by feature id) and attributes: the Python twin of :func:`predicate_sql`."""
    node = segment.node if isinstance(segment, Segment) else segment
    if isinstance(node, All):
        return all(evaluate(c, values, attributes) for c in node.children)
    if isinstance(node, AnyOf):
        return any(evaluate(c, values, attributes) for c in node.children)
    if isinstance(node, Not):
        return not evaluate(node.child, values, attributes)
    if isinstance(node, Compare):
        number = _measure(node.measure, values)
        return all(_PY_OPS[op](number, bound) for op, bound in node.ops)
    if isinstance(node, AttributeIs):
        actual = attributes.get(node.name)
        for op, expected in node.ops:
            if op == "eq" and actual != expected:
                return False
            if op == "ne" and actual == expected:
                return False
            if op == "in" and actual not in expected:
                return False
        return True
    raise TypeError(f"not a rule node: {node!r}")


# ------------------------------------------------------------------------------------------------------ batch ---
def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(float(value))


def _measure_sql(measure: Measure) -> str:
    if measure.denominator is None:
        return column(measure.feature)
    num, den = column(measure.feature), column(measure.denominator)
    return f"(CASE WHEN {den} > 0 THEN {num}::DOUBLE / {den} ELSE 0.0 END)"


def predicate_sql(segment: Segment | Node) -> str:
    """Membership as a boolean SQL expression over the columns of :func:`features_sql`."""
    node = segment.node if isinstance(segment, Segment) else segment
    if isinstance(node, All):
        return "(" + " AND ".join(predicate_sql(c) for c in node.children) + ")"
    if isinstance(node, AnyOf):
        return "(" + " OR ".join(predicate_sql(c) for c in node.children) + ")"
    if isinstance(node, Not):
        return f"(NOT {predicate_sql(node.child)})"
    if isinstance(node, Compare):
        number = _measure_sql(node.measure)
        return "(" + " AND ".join(f"{number} {_SQL_OPS[op]} {_literal(b)}" for op, b in node.ops) + ")"
    if isinstance(node, AttributeIs):
        parts = []
        for op, expected in node.ops:
            if op == "eq":
                parts.append(f"coalesce({node.name} = {_literal(expected)}, false)")
            elif op == "ne":
                parts.append(f"({node.name} IS DISTINCT FROM {_literal(expected)})")
            else:
                parts.append(f"coalesce({node.name} IN ({', '.join(_literal(v) for v in expected)}), false)")
        return "(" + " AND ".join(parts) + ")"
    raise TypeError(f"not a rule node: {node!r}")


def _filter(feature: Feature, as_of_ms: int, categorised: bool) -> str:
    parts = [f"bucket >= {window_start_bucket(as_of_ms, feature.window_h)}"]
    if feature.events:
        parts.append("event_type IN (" + ", ".join(_literal(e) for e in feature.events) + ")")
    if feature.device is not None:
        parts.append(f"device_class = {_literal(feature.device)}")
    if categorised:
        parts.append(f"category = {_literal(feature.category)}")
    return " AND ".join(parts)


def _aggregate(feature: Feature, as_of_ms: int, categorised: bool) -> str:
    what = "sum(value)" if feature.kind == "sum" else "count(*)"
    return f"coalesce({what} FILTER (WHERE {_filter(feature, as_of_ms, categorised)}), 0) AS {column(feature)}"


def features_sql(
    features: Iterable[Feature],
    as_of_ms: int,
    horizon_h: int,
    gap_ms: int = SESSION_GAP_MS,
    users: str = "true",
    sessions_table: str | None = None,
) -> str:
    """One row per evaluated user (:func:`in_population`): ``uid`` (the user's key in ``user_keys``), a ``f_<id>``
    column per feature, and the attributes (``age_band``, ...). Reads the tables ``events`` (loaded from
    ``horizon_start - gap_ms`` to ``as_of_ms`` included, so each session start sees the event before it; a wider
    range gives the same answer), ``user_keys``, ``item_categories`` and ``attributes`` (recstack.profiles.source).
    ``users``: a condition on ``uid`` that keeps one range of users (recstack.profiles.partitions); all by default.
    Every attribute user needs a key (source.ensure_user_keys). ``sessions_table``: a table of the same users'
    session starts ``(uid, bucket)`` from the horizon's start or earlier (the profile build's, see
    recstack.profiles.build.shared_sessions), read instead of finding the starts in ``events`` again."""
    features = list({f.id: f for f in features}.values())
    lo = window_start_bucket(as_of_ms, horizon_h)
    plain = [f for f in features if f.kind != "sessions" and f.category is None]
    tagged = [f for f in features if f.kind != "sessions" and f.category is not None]
    sessions = [f for f in features if f.kind == "sessions"]
    ctes = [
        f"ev AS (SELECT uid, item_id, event_type, value, category, device_class, bucket FROM events "
        f"WHERE bucket >= {lo} AND ts_ms <= {int(as_of_ms)} AND {users})",
        "attrs AS (SELECT k.uid, a.age_band, a.gender, a.country, a.language "
        f"FROM attributes a JOIN user_keys k USING (user_id) WHERE {users})",
        "population AS (SELECT DISTINCT uid FROM ev UNION SELECT uid FROM attrs)",
    ]
    joins = []
    if plain:
        ctes.append(
            "f_plain AS (SELECT uid, "
            + ", ".join(_aggregate(f, as_of_ms, False) for f in plain)
            + " FROM ev GROUP BY uid)"
        )
        joins.append("LEFT JOIN f_plain USING (uid)")
    if tagged:
        # An event once per category it carries (its item's, plus the one it states unless the item has it: the
        # definition in recstack.profiles.source), kept to the categories the rules name, so the join stays small.
        named = ", ".join(sorted({_literal(f.category) for f in tagged}))
        ctes.append(
            "evc AS (SELECT e.uid, e.event_type, e.value, e.device_class, e.bucket, c.category FROM ev e "
            f"JOIN item_categories c USING (item_id) WHERE c.category IN ({named}) "
            "UNION ALL SELECT uid, event_type, value, device_class, bucket, category FROM ev e "
            f"WHERE category IN ({named}) AND NOT EXISTS "
            "(SELECT 1 FROM item_categories c WHERE c.item_id = e.item_id AND c.category = e.category))"
        )
        ctes.append(
            "f_tagged AS (SELECT uid, "
            + ", ".join(_aggregate(f, as_of_ms, True) for f in tagged)
            + " FROM evc GROUP BY uid)"
        )
        joins.append("LEFT JOIN f_tagged USING (uid)")
    if sessions and sessions_table is not None:
        ctes.append(f"starts AS (SELECT uid, bucket FROM {sessions_table} WHERE bucket >= {lo} AND {users})")
    elif sessions:
        ctes.append(
            "starts AS (SELECT uid, bucket FROM ("
            # no tie-break by event id: among events of one millisecond only one can start a session, whichever
            "SELECT uid, bucket, ts_ms, lag(ts_ms) OVER (PARTITION BY uid ORDER BY ts_ms) AS prev "
            # events from one gap before the horizon: all a start inside it needs, however far back the load goes
            f"FROM events WHERE ts_ms >= {lo * HOUR_MS - int(gap_ms)} AND ts_ms <= {int(as_of_ms)} AND {users}) "
            f"WHERE bucket >= {lo} AND (prev IS NULL OR ts_ms - prev > {int(gap_ms)}))"
        )
    if sessions:
        ctes.append(
            "f_sessions AS (SELECT uid, "
            + ", ".join(
                f"count(*) FILTER (WHERE bucket >= {window_start_bucket(as_of_ms, f.window_h)}) AS {column(f)}"
                for f in sessions
            )
            + " FROM starts GROUP BY uid)"
        )
        joins.append("LEFT JOIN f_sessions USING (uid)")
    columns = [f"coalesce({column(f)}, 0)::DOUBLE AS {column(f)}" for f in features]
    select = ", ".join(["p.uid", *columns, "a.age_band", "a.gender", "a.country", "a.language"])
    return (
        "WITH "
        + ",\n".join(ctes)
        + f"\nSELECT {select} FROM population p "
        + " ".join(joins)
        + " LEFT JOIN attrs a USING (uid)"
    )


def members_sql(segments: Mapping[str, Segment], features_table: str) -> str:
    """``(segment, uid)`` for every member of every segment, read from a table (or CTE) holding the columns of
    :func:`features_sql` for the segments' features. DuckDB reads it from a materialised CTE (:func:`membership_sql`),
    Spark from a cached view (recstack.profiles.segments_spark): one predicate text for both engines."""
    parts = [
        f"SELECT {_literal(name)} AS segment, uid FROM {features_table} WHERE {predicate_sql(segment)}"
        for name, segment in segments.items()
    ]
    return "\nUNION ALL\n".join(parts) if parts else "SELECT NULL::VARCHAR AS segment, NULL::INTEGER AS uid WHERE false"


def membership_sql(
    segments: Mapping[str, Segment],
    as_of_ms: int,
    horizon_h: int,
    gap_ms: int = SESSION_GAP_MS,
    users: str = "true",
    sessions_table: str | None = None,
) -> str:
    """``(segment, uid)`` for every member of every segment at ``as_of_ms`` (``users``, ``sessions_table``: as in
    :func:`features_sql`), in DuckDB's dialect."""
    features = [f for s in segments.values() for f in s.features]
    # MATERIALIZED: the features are computed once, not once per segment of the UNION ALL. (DuckDB only: Spark has no
    # such keyword, so it caches features_sql as a view of its own and reads members_sql over it.)
    uf = features_sql(features, as_of_ms, horizon_h, gap_ms, users, sessions_table)
    return f"WITH uf AS MATERIALIZED ({uf})\n{members_sql(segments, 'uf')}"
