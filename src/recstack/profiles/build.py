"""User profiles: one denormalised row per user, computed with set-based SQL (DuckDB) over the tables of
recstack.profiles.source (``events``, ``item_categories``, and ``attributes`` when loaded).

Windows are whole UTC hours, as in the segment rules: ``7d`` at ``as_of`` = hour buckets ``(as_of // 1h - 168,
as_of // 1h]`` (recstack.profiles.compile.window_start_bucket). Only events at or before ``as_of`` count. Columns
(:func:`profile_schema`):

========================  =============================================================================================
user_id                   pseudonym (after aliases: merged visitors and duplicate accounts)
as_of_ms                  the time the profile describes
n_<type>_<w>d             events of each type (recstack.collect.events.EVENT_TYPES) in the last 7 / 30 / 90 days;
n_events_<w>d             all events in the window
first_seen_ms             first event of the history loaded (``history_days`` of ``recstack-profiles``; null: all)
last_seen_ms, recency_days  last event, and days from it to ``as_of`` (fractional)
frequency                 active UTC days in the last 30 days
sessions_30d/_90d         sessions started in the window (a new session after more than ``session_gap_ms`` idle)
mean_session_s            mean of (last event - first event) over the sessions started in the last 90 days
bounce_rate               single-event sessions / sessions, same sessions; null without one
dwell_total_ms            sum of ``dwell`` values in the last 90 days
pref_implicit             map<string, double>: category -> score. Each event of a weighted type in the last 90 days
                          adds ``weight * 0.5 ** (age / half_life)`` to every category of its item (and the category it
                          states); scores are then divided by their sum, so they sum to 1
top_categories            list<string>: the ``top_k`` categories by ``pref_implicit``, best first
rating_by_category        map<string, double>: mean rating of the user's rated items per category (history loaded)
stated_preferences        map<string, double>: latest ``preference`` value per category (-1 dislike .. 1 like)
survey_answers            map<string, string>: latest answer per survey question (table ``survey_answers`` if loaded)
age_band, gender,         latest non-null value from ``profile`` events of all history (table ``attributes`` of
country, language          source.load_attributes; else from the events loaded)
device_class              the most used device class in the last 90 days (ties: the alphabetically last)
hour_of_day               list<int64> of 24 counts of events per hour of the day in the last 90 days: the client's
                          local hour when it sent one (``local_hour``), else the UTC hour
========================  =============================================================================================

Maps and lists are Arrow/Parquet ``map`` / ``list`` types (DuckDB, Spark and pandas read them as is); the online
copy in Redis holds them as JSON (recstack.profiles.online).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from recstack.collect.events import EVENT_TYPES
from recstack.profiles.compile import window_start_bucket
from recstack.profiles.rules import HOUR_MS, SESSION_GAP_MS

DAY_MS = 24 * HOUR_MS
NOT_IN_A_WINDOW = 1_000_000  # the window tag of events older than the widest window (first_seen_ms counts them)
WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90)
HORIZON_DAYS = max(WINDOWS_DAYS)
DEMOGRAPHICS: tuple[str, ...] = ("age_band", "gender", "country", "language")
# Implicit signals only: explicit ones (rating, preference, survey) and page-level ones have maps of their own.
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "view": 1.0,
    "dwell": 1.0,
    "scroll": 0.5,
    "click": 2.0,
    "add_to_cart": 3.0,
    "purchase": 5.0,
}

__all__ = ["DEFAULT_WEIGHTS", "DEMOGRAPHICS", "ProfileSpec", "build_profiles", "profile_schema"]


@dataclass(frozen=True)
class ProfileSpec:
    """How profiles are computed (``configs/profiles.yaml``)."""

    session_gap_ms: int = SESSION_GAP_MS
    half_life_days: float = 14.0
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    top_k: int = 5

    def __post_init__(self) -> None:
        if not isinstance(self.session_gap_ms, int) or self.session_gap_ms <= 0:
            raise ValueError(f"session_gap_ms={self.session_gap_ms!r}: give a positive whole number of milliseconds")
        if not _positive(self.half_life_days):
            raise ValueError(f"half_life_days={self.half_life_days!r}: give a positive number of days")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k={self.top_k!r}: give a whole number >= 1")
        for event_type, weight in self.weights.items():
            if event_type not in EVENT_TYPES:
                raise ValueError(f"weights.{event_type}: unknown event type; the event types are {list(EVENT_TYPES)}")
            if not (_positive(weight) or weight == 0):
                raise ValueError(f"weights.{event_type}={weight!r}: a weight is a finite number >= 0")


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def profile_schema() -> pa.Schema:
    """The columns :func:`build_profiles` returns, in order (the module docstring says what each holds)."""
    counts = [pa.field(f"n_{kind}_{days}d", pa.int64()) for days in WINDOWS_DAYS for kind in (*EVENT_TYPES, "events")]
    return pa.schema(
        [
            pa.field("user_id", pa.string()),
            pa.field("as_of_ms", pa.int64()),
            *counts,
            pa.field("first_seen_ms", pa.int64()),
            pa.field("last_seen_ms", pa.int64()),
            pa.field("recency_days", pa.float64()),
            pa.field("frequency", pa.int64()),
            pa.field("sessions_30d", pa.int64()),
            pa.field("sessions_90d", pa.int64()),
            pa.field("mean_session_s", pa.float64()),
            pa.field("bounce_rate", pa.float64()),
            pa.field("dwell_total_ms", pa.float64()),
            pa.field("pref_implicit", pa.map_(pa.string(), pa.float64())),
            pa.field("top_categories", pa.list_(pa.string())),
            pa.field("rating_by_category", pa.map_(pa.string(), pa.float64())),
            pa.field("stated_preferences", pa.map_(pa.string(), pa.float64())),
            pa.field("survey_answers", pa.map_(pa.string(), pa.string())),
            *(pa.field(c, pa.string()) for c in DEMOGRAPHICS),
            pa.field("device_class", pa.string()),
            pa.field("hour_of_day", pa.list_(pa.int64())),
        ]
    )


def _has_table(con, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


def _map(key: str, value: str, source: str) -> str:
    return (
        f"(SELECT user_id, MAP(list({key} ORDER BY {key}), list({value} ORDER BY {key})) AS m FROM {source} GROUP BY 1)"
    )


def build_profiles(con, as_of_ms: int, spec: ProfileSpec | None = None) -> pa.Table:
    """One row per user seen in ``events`` (or with attributes), as of ``as_of_ms``; see the module docstring.

    Also leaves the temporary table ``profile_categories (user_id, category, score)`` (the normalised implicit scores,
    long form) for the imputation model of recstack.profiles.quality."""
    spec = spec or ProfileSpec()
    as_of = int(as_of_ms)
    lo = {days: window_start_bucket(as_of, days * 24) for days in WINDOWS_DAYS}
    horizon = lo[HORIZON_DAYS]
    half_life_ms = float(spec.half_life_days) * DAY_MS
    weights = pa.table(
        {
            "event_type": pa.array(list(spec.weights), pa.string()),
            "weight": pa.array([float(w) for w in spec.weights.values()], pa.float64()),
        }
    )
    con.register("_profile_weights", weights)
    try:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE profile_categories AS
                WITH weighted AS (
                    SELECT e.user_id, e.item_id, e.category,
                           w.weight * pow(0.5, ({as_of} - e.ts_ms) / {half_life_ms}) AS s
                    FROM events e JOIN _profile_weights w USING (event_type)
                    WHERE e.bucket >= {horizon} AND e.ts_ms <= {as_of} AND w.weight > 0),
                per_item AS (SELECT user_id, item_id, sum(s) AS s FROM weighted WHERE item_id IS NOT NULL GROUP BY ALL),
                raw AS (
                    SELECT p.user_id, c.category, p.s FROM per_item p JOIN item_categories c USING (item_id)
                    UNION ALL  -- a category the event states itself, unless its item has it already
                    SELECT w.user_id, w.category, w.s FROM weighted w
                    WHERE w.category IS NOT NULL AND NOT EXISTS (
                        SELECT 1 FROM item_categories c WHERE c.item_id = w.item_id AND c.category = w.category)),
                summed AS (SELECT user_id, category, sum(s) AS s FROM raw GROUP BY ALL)
                SELECT user_id, category, s / sum(s) OVER (PARTITION BY user_id) AS score FROM summed WHERE s > 0"""
        )
    finally:
        con.unregister("_profile_weights")
    return con.sql(_profiles_sql(con, as_of, lo, spec)).to_arrow_table().cast(profile_schema())


def _profiles_sql(con, as_of: int, lo: Mapping[int, int], spec: ProfileSpec) -> str:
    horizon, lo30 = lo[HORIZON_DAYS], lo[30]
    gap = int(spec.session_gap_ms)
    # Counts in two stages: events per (user, type, narrowest window) and per (user, hour of day) first, then the
    # windows' columns over those few rows: a filtered count per column over every event cost 40% more at 5M events.
    windows = sorted(WINDOWS_DAYS)
    narrowest = " ".join(f"WHEN bucket >= {lo[days]} THEN {days}" for days in windows)
    counts = []
    for days in WINDOWS_DAYS:
        for kind in EVENT_TYPES:
            counts.append(
                f"coalesce(sum(n) FILTER (WHERE event_type = '{kind}' AND w <= {days}), 0) AS n_{kind}_{days}d"
            )
        counts.append(f"coalesce(sum(n) FILTER (WHERE w <= {days}), 0) AS n_events_{days}d")
    hours = ", ".join(f"coalesce(sum(n) FILTER (WHERE h = {h}), 0)" for h in range(24))
    if _has_table(con, "attributes"):
        attributes = "attributes"
    else:
        latest = ", ".join(
            f"arg_max({c}, (ts_ms, event_id)) FILTER (WHERE {c} IS NOT NULL) AS {c}" for c in DEMOGRAPHICS
        )
        attributes = f"(SELECT user_id, {latest} FROM ev WHERE event_type = 'profile' GROUP BY user_id)"
    if _has_table(con, "survey_answers"):
        surveys = _map(
            "question_id",
            "answer",
            "(SELECT e.user_id, s.question_id, arg_max(s.answer, (e.ts_ms, e.event_id)) AS answer "
            "FROM ev e JOIN survey_answers s USING (event_id) GROUP BY ALL)",
        )
    else:
        surveys = "(SELECT NULL::VARCHAR AS user_id, NULL::MAP(VARCHAR, VARCHAR) AS m WHERE false)"
    k = int(spec.top_k)
    return f"""
    WITH ev AS NOT MATERIALIZED (SELECT * FROM events WHERE ts_ms <= {as_of}),
    population AS (SELECT DISTINCT user_id FROM ev UNION SELECT user_id FROM {attributes}),
    per_type AS (  -- w: the narrowest window an event is in (all history before the widest: {NOT_IN_A_WINDOW})
        SELECT user_id, event_type, CASE {narrowest} ELSE {NOT_IN_A_WINDOW} END AS w, count(*) AS n,
               min(ts_ms) AS first_ms, max(ts_ms) AS last_ms, sum(value) FILTER (WHERE event_type = 'dwell') AS dwell
        FROM ev GROUP BY ALL),
    per_hour AS (
        SELECT user_id, coalesce(local_hour, bucket % 24) AS h, count(*) AS n
        FROM ev WHERE bucket >= {horizon} GROUP BY ALL),
    activity AS (
        SELECT user_id, {", ".join(counts)},
               min(first_ms) AS first_seen_ms, max(last_ms) AS last_seen_ms,
               coalesce(sum(dwell) FILTER (WHERE w <= {HORIZON_DAYS}), 0) AS dwell_total_ms
        FROM per_type GROUP BY user_id),
    days AS (SELECT user_id, count(DISTINCT bucket // 24) AS frequency FROM ev WHERE bucket >= {lo30} GROUP BY user_id),
    hours AS (SELECT user_id, [{hours}] AS hour_of_day FROM per_hour GROUP BY user_id),
    devices AS (
        SELECT user_id, arg_max(device_class, (n, device_class)) AS device_class FROM (
            SELECT user_id, device_class, count(*) AS n FROM ev
            WHERE bucket >= {horizon} AND device_class IS NOT NULL GROUP BY ALL)
        GROUP BY user_id),
    -- Sessions need no tie-break between events of the same millisecond: whichever of them comes first, the
    -- sessions' starts, ends and sizes are the same (and sorting by time alone is cheaper than by time and id).
    edges AS (  -- each event's place in its session: first (after a gap) and/or last (before one)
        SELECT user_id, ts_ms, bucket,
               coalesce(ts_ms - lag(ts_ms) OVER w > {gap}, true) AS is_first,
               coalesce(lead(ts_ms) OVER w - ts_ms > {gap}, true) AS is_last
        FROM ev WHERE ts_ms >= {horizon * HOUR_MS - gap}
        WINDOW w AS (PARTITION BY user_id ORDER BY ts_ms)),
    sessions AS (  -- among first/last events, a first that is not also last is followed by its session's last (at
                   -- the same millisecond, ordering by is_last puts the first before the last)
        SELECT user_id, bucket, ts_ms AS start_ms, is_first AND is_last AS bounce,
               CASE WHEN is_last THEN ts_ms ELSE lead(ts_ms) OVER (PARTITION BY user_id ORDER BY ts_ms, is_last) END
                   AS end_ms, is_first
        FROM edges WHERE is_first OR is_last),
    session_stats AS (
        SELECT user_id,
               count(*) FILTER (WHERE bucket >= {lo30}) AS sessions_30d,
               count(*) FILTER (WHERE bucket >= {horizon}) AS sessions_90d,
               avg((end_ms - start_ms) / 1000.0) FILTER (WHERE bucket >= {horizon}) AS mean_session_s,
               avg(bounce::INTEGER) FILTER (WHERE bucket >= {horizon}) AS bounce_rate
        FROM sessions WHERE is_first GROUP BY user_id),
    implicit AS (
        SELECT user_id, MAP(list(category ORDER BY category), list(score ORDER BY category)) AS m,
               list(category ORDER BY score DESC, category)[1:{k}] AS top
        FROM profile_categories GROUP BY user_id),
    ratings AS {
        _map(
            "category",
            "r",
            "(SELECT e.user_id, c.category, avg(e.value) AS r FROM ev e "
            "JOIN item_categories c USING (item_id) WHERE e.event_type = 'rating' AND e.value IS NOT NULL "
            "GROUP BY ALL)",
        )
    },
    stated AS {
        _map(
            "category",
            "v",
            "(SELECT user_id, category, arg_max(value, (ts_ms, event_id)) AS v FROM ev "
            "WHERE event_type = 'preference' AND category IS NOT NULL AND value IS NOT NULL GROUP BY ALL)",
        )
    },
    surveys AS {surveys}
    SELECT p.user_id, {as_of}::BIGINT AS as_of_ms,
           {", ".join(f"coalesce(a.{c.name}, 0) AS {c.name}" for c in profile_schema() if c.name.startswith("n_"))},
           a.first_seen_ms, a.last_seen_ms, ({as_of} - a.last_seen_ms) / {float(DAY_MS)} AS recency_days,
           coalesce(dy.frequency, 0) AS frequency,
           coalesce(s.sessions_30d, 0) AS sessions_30d, coalesce(s.sessions_90d, 0) AS sessions_90d,
           s.mean_session_s, s.bounce_rate, coalesce(a.dwell_total_ms, 0) AS dwell_total_ms,
           coalesce(i.m, MAP()) AS pref_implicit, coalesce(i.top, []) AS top_categories,
           coalesce(r.m, MAP()) AS rating_by_category, coalesce(st.m, MAP()) AS stated_preferences,
           coalesce(sv.m, MAP()) AS survey_answers,
           {", ".join(f"t.{c}" for c in DEMOGRAPHICS)},
           d.device_class, coalesce(h.hour_of_day, [{", ".join(["0"] * 24)}]) AS hour_of_day
    FROM population p
    LEFT JOIN activity a USING (user_id) LEFT JOIN days dy USING (user_id) LEFT JOIN hours h USING (user_id)
    LEFT JOIN session_stats s USING (user_id)
    LEFT JOIN devices d USING (user_id) LEFT JOIN implicit i USING (user_id)
    LEFT JOIN ratings r USING (user_id) LEFT JOIN stated st USING (user_id) LEFT JOIN surveys sv USING (user_id)
    LEFT JOIN {attributes} t USING (user_id)
    ORDER BY p.user_id"""
