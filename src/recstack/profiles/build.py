"""User profiles: one denormalised row per user, computed with set-based SQL (DuckDB) over the tables of
recstack.profiles.source (``events`` and ``user_keys``, ``item_categories``, and ``attributes`` when loaded), one range
of user keys at a time (recstack.profiles.partitions: a profile reads its own user's events only).

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

One SQL text per step serves both engines (:func:`profile_queries`): DuckDB runs it here, Spark runs it translated by
sqlglot (recstack.profiles.profiles_spark). So the text keeps to forms both read the same way: maps are built by
``map_from_entries`` over a sorted list of structs (not DuckDB's ``MAP(list(.. ORDER BY ..))``), ordered lists by
sorting structs (an ordered aggregate does not translate), and fractions divide doubles (a literal such as ``1000.0``
is a DECIMAL in Spark, which divides to a different rounding).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from recstack.collect.events import EVENT_TYPES
from recstack.profiles.compile import window_start_bucket
from recstack.profiles.partitions import in_range, user_ranges
from recstack.profiles.rules import HOUR_MS, SESSION_GAP_MS
from recstack.profiles.source import ensure_user_keys

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

__all__ = [
    "ATTRIBUTES_SQL",
    "DEFAULT_WEIGHTS",
    "DEMOGRAPHICS",
    "ProfileQueries",
    "ProfileSpec",
    "build_profiles",
    "profile_queries",
    "profile_schema",
    "shared_sessions",
]
# the attributes by user key (``_profile_attributes``), from the tables ``attributes`` and ``user_keys``
ATTRIBUTES_SQL = (
    "SELECT k.uid, " + ", ".join(f"a.{c}" for c in DEMOGRAPHICS) + " FROM attributes a JOIN user_keys k USING (user_id)"
)


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


def _sorted_map(key: str, value: str) -> str:
    """The aggregate of a map ordered by key. Sorting the (key, value) structs orders them by key (the keys of one
    map are distinct); DuckDB and Spark (translated) both read this form."""
    return f"map_from_entries(array_sort(list({{'k': {key}, 'v': {value}}})))"


def _map(key: str, value: str, source: str) -> str:
    return f"(SELECT uid, {_sorted_map(key, value)} AS m FROM {source} GROUP BY 1)"


@dataclass(frozen=True)
class ProfileQueries:
    """The SQL texts of a build over one range of user keys, in DuckDB's dialect. Run in this order, each step's rows
    stored under its table name before the next reads them: ``profile_categories``, ``profile_sessions``, then the
    profiles. recstack.profiles.profiles_spark runs the same texts on Spark."""

    categories: str  # profile_categories (uid, category, score)
    sessions: str  # profile_sessions (uid, bucket, start_ms, end_ms, bounce)
    profiles: str  # the profile rows (profile_schema), ordered by user_id


def _sessions_from_ms(as_of: int, gap: int) -> int:
    """The first event time the sessions read: a session gap before the widest window's first hour."""
    return window_start_bucket(as_of, HORIZON_DAYS * 24) * HOUR_MS - gap


def profile_queries(con, as_of_ms: int, spec: ProfileSpec, keys: tuple[int, int] | None = None) -> ProfileQueries:
    """The queries of one range of users (recstack.profiles.partitions; None: all). ``con`` tells which optional
    tables are loaded (``_profile_attributes``, from :data:`ATTRIBUTES_SQL`, when ``attributes`` is; else the profile
    events; ``survey_answers``)."""
    as_of = int(as_of_ms)
    lo = {days: window_start_bucket(as_of, days * 24) for days in WINDOWS_DAYS}
    gap = int(spec.session_gap_ms)
    return ProfileQueries(
        categories=_categories_sql(as_of, lo[HORIZON_DAYS], spec, keys),
        sessions=_sessions_sql(as_of, _sessions_from_ms(as_of, gap), gap, keys),
        profiles=_profiles_sql(con, as_of, lo, spec, keys, _has_table(con, "attributes")),
    )


def build_profiles(con, as_of_ms: int, spec: ProfileSpec | None = None) -> pa.Table:
    """One row per user seen in ``events`` (or with attributes), as of ``as_of_ms``, ordered by ``user_id``; see the
    module docstring. Reads the tables of recstack.profiles.source; users are computed a range of keys at a time
    (recstack.profiles.partitions), which bounds the memory of the per-user sorts and aggregates.

    Also leaves the temporary tables ``profile_categories (uid, category, score)`` (the normalised implicit scores,
    long form, by the user's key in ``user_keys``) for the imputation model of recstack.profiles.quality, and
    ``profile_sessions (uid, bucket, start_ms, end_ms, bounce)`` (the sessions the columns count, see
    :func:`shared_sessions`) for the segment rules."""
    spec = spec or ProfileSpec()
    as_of = int(as_of_ms)
    ensure_user_keys(con)
    if _has_table(con, "attributes"):  # by key once (a few hundred thousand rows), not per range
        con.execute("CREATE OR REPLACE TEMP TABLE _profile_attributes AS " + ATTRIBUTES_SQL)
    con.execute("CREATE OR REPLACE TEMP TABLE profile_categories (uid INTEGER, category VARCHAR, score DOUBLE)")
    con.execute("DROP TABLE IF EXISTS profile_sessions_spec")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE profile_sessions "
        "(uid INTEGER, bucket INTEGER, start_ms BIGINT, end_ms BIGINT, bounce BOOLEAN)"
    )
    gap = int(spec.session_gap_ms)
    from_ms = _sessions_from_ms(as_of, gap)
    parts = []
    try:
        for keys in user_ranges(con):
            queries = profile_queries(con, as_of, spec, keys)
            con.execute("INSERT INTO profile_categories " + queries.categories)
            con.execute("INSERT INTO profile_sessions " + queries.sessions)
            parts.append(con.sql(queries.profiles).to_arrow_table())
    finally:
        con.execute("DROP TABLE IF EXISTS _profile_attributes")
    con.execute(  # what profile_sessions holds (shared_sessions)
        f"CREATE OR REPLACE TEMP TABLE profile_sessions_spec AS SELECT {as_of}::BIGINT AS as_of_ms, "
        f"{gap}::BIGINT AS gap_ms, {from_ms}::BIGINT AS from_ms"
    )
    table = pa.concat_tables(parts)
    if len(parts) > 1 and not _ascending(table["user_id"]):  # keys added after the load's (ensure_user_keys)
        table = table.sort_by([("user_id", "ascending")])
    return table.cast(profile_schema())


def _ascending(column: pa.ChunkedArray) -> bool:
    """Whether a column without nulls is in ascending order (each range's rows are; the ranges follow each other
    whenever the keys follow the pseudonyms' order)."""
    values = column.combine_chunks()
    return len(values) < 2 or not pc.any(pc.less(values[1:], values[:-1])).as_py()


def _sessions_sql(as_of: int, from_ms: int, gap: int, keys) -> str:
    """The sessions of one range of users that start at or after ``from_ms`` (``profile_sessions`` rows): the events
    from ``from_ms`` on, so a start there sees the event before it when it is within the gap."""
    return f"""
    WITH ev AS (
        SELECT uid, ts_ms, bucket FROM events WHERE ts_ms <= {as_of} AND ts_ms >= {from_ms} AND {in_range(keys)}),
    -- Sessions need no tie-break between events of the same millisecond: whichever of them comes first, the
    -- sessions' starts, ends and sizes are the same (and sorting by time alone is cheaper than by time and id).
    edges AS (  -- each event's place in its session: first (after a gap) and/or last (before one)
        SELECT uid, ts_ms, bucket,
               coalesce(ts_ms - lag(ts_ms) OVER w > {gap}, true) AS is_first,
               coalesce((lead(ts_ms) OVER w) - ts_ms > {gap}, true) AS is_last  -- (): Spark reads `w - ts_ms` as a name
        FROM ev WINDOW w AS (PARTITION BY uid ORDER BY ts_ms)),
    sessions AS (  -- among first/last events, a first that is not also last is followed by its session's last (at
                   -- the same millisecond, ordering by is_last puts the first before the last)
        SELECT uid, bucket, ts_ms AS start_ms, is_first AND is_last AS bounce,
               CASE WHEN is_last THEN ts_ms ELSE lead(ts_ms) OVER (PARTITION BY uid ORDER BY ts_ms, is_last) END
                   AS end_ms, is_first
        FROM edges WHERE is_first OR is_last)
    SELECT uid, bucket, start_ms, end_ms, bounce FROM sessions WHERE is_first"""


def shared_sessions(con, as_of_ms: int, gap_ms: int, from_ms: int) -> str | None:
    """``profile_sessions`` when :func:`build_profiles` left it for the same events, ``as_of_ms`` and gap, from
    ``from_ms`` or earlier (a session start is the same whichever earlier events are read, see _sessions_sql): the
    segment rules' session counts then read it instead of sorting the events again (recstack.profiles.compile).
    Else None."""
    if not _has_table(con, "profile_sessions_spec"):
        return None
    as_of, gap, start = con.execute("SELECT as_of_ms, gap_ms, from_ms FROM profile_sessions_spec").fetchall()[0]
    return "profile_sessions" if (as_of, gap) == (int(as_of_ms), int(gap_ms)) and start <= from_ms else None


_SCORE_UNITS = "1e12"  # implicit category weights are summed as whole multiples of 1e-12 (see _categories_sql)


def _categories_sql(as_of: int, horizon: int, spec: ProfileSpec, keys) -> str:
    """The normalised implicit category scores of one range of users (``profile_categories`` rows).

    DuckDB sums in whatever order its threads deliver the rows, so a plain ``sum`` of doubles differed in the last
    bits from run to run (and between user-key ranges). Each event's weight is therefore summed as an integer count of
    1e-12 (exact, in any order), so equal preferences are equal and ties in ``top_categories`` break alphabetically as
    documented. Over 20M events the batch took as long as with plain sums (89-92 s vs 86-93 s with the Redis load, one
    machine, 2026-12-07; 35 s without the load)."""
    half_life_ms = float(spec.half_life_days) * DAY_MS  # a string cast, as the weights' (a DECIMAL in Spark)
    weighted = {kind: float(w) for kind, w in spec.weights.items() if float(w) > 0}
    if not weighted:
        return "SELECT NULL::INTEGER AS uid, NULL::VARCHAR AS category, NULL::DOUBLE AS score WHERE false"
    # the weights as a CASE over the event type: a join with a weights table cost a string cast per event
    # (a literal such as 0.1 would be a DECIMAL; the string cast is Python's float, bit for bit)
    weight = "CASE event_type " + " ".join(f"WHEN '{k}' THEN '{w!r}'::DOUBLE" for k, w in weighted.items()) + " END"
    types = ", ".join(f"'{k}'" for k in weighted)
    # NOT MATERIALIZED: scanning the events twice (the second time only those stating a category) costs less than
    # holding every weighted event of the range
    return f"""
        WITH weighted AS NOT MATERIALIZED (
            SELECT uid, item_id, category,
                   {weight} * pow(0.5, ({as_of} - ts_ms)::DOUBLE / '{half_life_ms!r}'::DOUBLE) AS s
            FROM events
            WHERE {in_range(keys)} AND bucket >= {horizon} AND ts_ms <= {as_of} AND event_type IN ({types})),
        raw AS (  -- each event once per category of its item (summing per item first was slower: 20% at 20M)
            SELECT w.uid, c.category, w.s FROM weighted w JOIN item_categories c USING (item_id)
            UNION ALL  -- a category the event states itself, unless its item has it already
            SELECT w.uid, w.category, w.s FROM weighted w
            WHERE w.category IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM item_categories c WHERE c.item_id = w.item_id AND c.category = w.category)),
        summed AS (SELECT uid, category, sum(CAST(round(s * {_SCORE_UNITS}) AS BIGINT)) AS s FROM raw GROUP BY ALL)
        SELECT uid, category, s::DOUBLE / (sum(s) OVER (PARTITION BY uid))::DOUBLE AS score FROM summed WHERE s > 0"""


def _profiles_sql(con, as_of: int, lo: Mapping[int, int], spec: ProfileSpec, keys, has_attributes: bool) -> str:
    horizon, lo30 = lo[HORIZON_DAYS], lo[30]
    mine = in_range(keys)
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
    if has_attributes:
        attributes = f"(SELECT * FROM _profile_attributes WHERE {mine})"
    else:  # the profile events loaded (recstack.profiles.source: event_profiles)
        latest = ", ".join(
            f"arg_max({c}, (ts_ms, event_id)) FILTER (WHERE {c} IS NOT NULL) AS {c}" for c in DEMOGRAPHICS
        )
        attributes = f"(SELECT uid, {latest} FROM event_profiles WHERE ts_ms <= {as_of} AND {mine} GROUP BY uid)"
    if _has_table(con, "survey_answers"):
        surveys = _map(
            "question_id",
            "answer",
            "(SELECT e.uid, s.question_id, arg_max(s.answer, (e.ts_ms, e.event_id)) AS answer "
            "FROM ev e JOIN survey_answers s USING (event_id) GROUP BY ALL)",
        )
    else:
        surveys = "(SELECT NULL::INTEGER AS uid, NULL::MAP(VARCHAR, VARCHAR) AS m WHERE false)"
    k = int(spec.top_k)
    return f"""
    WITH ev AS NOT MATERIALIZED (SELECT * FROM events WHERE ts_ms <= {as_of} AND {mine}),
    population AS (SELECT DISTINCT uid FROM ev UNION SELECT uid FROM {attributes}),
    per_type AS (  -- w: the narrowest window an event is in (all history before the widest: {NOT_IN_A_WINDOW})
        SELECT uid, event_type, CASE {narrowest} ELSE {NOT_IN_A_WINDOW} END AS w, count(*) AS n,
               min(ts_ms) AS first_ms, max(ts_ms) AS last_ms, sum(value) FILTER (WHERE event_type = 'dwell') AS dwell
        FROM ev GROUP BY ALL),
    per_hour AS (
        SELECT uid, coalesce(local_hour, bucket % 24) AS h, count(*) AS n
        FROM ev WHERE bucket >= {horizon} GROUP BY ALL),
    activity AS (
        SELECT uid, {", ".join(counts)},
               min(first_ms) AS first_seen_ms, max(last_ms) AS last_seen_ms,
               coalesce(sum(dwell) FILTER (WHERE w <= {HORIZON_DAYS}), 0) AS dwell_total_ms
        FROM per_type GROUP BY uid),
    days AS (SELECT uid, count(DISTINCT bucket // 24) AS frequency FROM ev WHERE bucket >= {lo30} GROUP BY uid),
    hours AS (SELECT uid, [{hours}] AS hour_of_day FROM per_hour GROUP BY uid),
    devices AS (  -- device_class: an ENUM whose order is the strings' (source.py), ties go to the alphabetically last
        SELECT uid, arg_max(device_class, (n, device_class))::VARCHAR AS device_class FROM (
            SELECT uid, device_class, count(*) AS n FROM ev
            WHERE bucket >= {horizon} AND device_class IS NOT NULL GROUP BY ALL)
        GROUP BY uid),
    session_stats AS (
        SELECT uid,
               count(*) FILTER (WHERE bucket >= {lo30}) AS sessions_30d,
               count(*) FILTER (WHERE bucket >= {horizon}) AS sessions_90d,
               avg((end_ms - start_ms)::DOUBLE / 1000) FILTER (WHERE bucket >= {horizon}) AS mean_session_s,
               avg(bounce::INTEGER) FILTER (WHERE bucket >= {horizon}) AS bounce_rate
        FROM profile_sessions WHERE {mine} GROUP BY uid),
    implicit AS (  -- top: the categories by score, best first (ties: alphabetically), as sorted (-score, category)
        SELECT uid, {_sorted_map("category", "score")} AS m,
               array_slice(list_transform(array_sort(list({{'s': -score, 'c': category}})), lambda x: x.c), 1, {k})
                   AS top
        FROM profile_categories WHERE {mine} GROUP BY uid),
    ratings AS {
        _map(
            "category",
            "r",
            "(SELECT e.uid, c.category, avg(e.value) AS r FROM ev e "
            "JOIN item_categories c USING (item_id) WHERE e.event_type = 'rating' AND e.value IS NOT NULL "
            "GROUP BY ALL)",
        )
    },
    stated AS {
        _map(
            "category",
            "v",
            "(SELECT uid, category, arg_max(value, (ts_ms, event_id)) AS v FROM ev "
            "WHERE event_type = 'preference' AND category IS NOT NULL AND value IS NOT NULL GROUP BY ALL)",
        )
    },
    surveys AS {surveys}
    SELECT u.user_id, {as_of}::BIGINT AS as_of_ms,
           {", ".join(f"coalesce(a.{c.name}, 0) AS {c.name}" for c in profile_schema() if c.name.startswith("n_"))},
           a.first_seen_ms, a.last_seen_ms, ({as_of} - a.last_seen_ms)::DOUBLE / {DAY_MS} AS recency_days,
           coalesce(dy.frequency, 0) AS frequency,
           coalesce(s.sessions_30d, 0) AS sessions_30d, coalesce(s.sessions_90d, 0) AS sessions_90d,
           s.mean_session_s, s.bounce_rate, coalesce(a.dwell_total_ms, 0) AS dwell_total_ms,
           coalesce(i.m, MAP()) AS pref_implicit, coalesce(i.top, []) AS top_categories,
           coalesce(r.m, MAP()) AS rating_by_category, coalesce(st.m, MAP()) AS stated_preferences,
           coalesce(sv.m, MAP()) AS survey_answers,
           {", ".join(f"t.{c}" for c in DEMOGRAPHICS)},
           d.device_class, coalesce(h.hour_of_day, [{", ".join(["0"] * 24)}]) AS hour_of_day
    FROM population p LEFT JOIN user_keys u USING (uid)
    LEFT JOIN activity a USING (uid) LEFT JOIN days dy USING (uid) LEFT JOIN hours h USING (uid)
    LEFT JOIN session_stats s USING (uid)
    LEFT JOIN devices d USING (uid) LEFT JOIN implicit i USING (uid)
    LEFT JOIN ratings r USING (uid) LEFT JOIN stated st USING (uid) LEFT JOIN surveys sv USING (uid)
    LEFT JOIN {attributes} t USING (uid)
    ORDER BY u.user_id"""
