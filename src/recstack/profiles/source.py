"""The events profiles and segments are computed from, as DuckDB tables: one definition for every batch job here.

:func:`load_events` reads the event lake (recstack.data.lake) for a time range with the same cleaning rules as
``prepare data=lake`` (recstack.data.sources.lake.clean_events_sql: each event once, anonymous ids merged into the user
they were identified as, a ``bot`` flag) and the same event time (``event_time_ms``: the client's clock when plausible,
else the receive time). It creates three temporary tables. ``events``, one row per event:

==================  ==========================================================================================
uid                 the user's integer key in ``user_keys`` (after aliases)
event_id            the event's id for the types whose tie-breaks or joins need it (profile, preference, survey);
                    null for the others
item_id             the product, or NULL for page-level events
event_type          view, click, ..., profile (an ENUM of the window's types, in the strings' order)
value               rating, dwell ms, scroll depth, preference score
ts_ms               event time, epoch milliseconds (UTC)
bucket              ``ts_ms // 3_600_000`` (INTEGER): the UTC hour, the unit every rolling window is counted in
category            the category a ``preference`` event scores (stated, not the item's)
device_class        the device class (desktop, mobile, tablet, bot, ...; an ENUM like event_type)
local_hour          the client's local hour of day when it sent one
bot                 device_class = 'bot'
==================  ==========================================================================================

``user_keys (uid, user_id)``: the pseudonym (after aliases) of each key. Keys follow the pseudonyms' order, so
``ORDER BY uid`` is ``ORDER BY user_id`` for every user with events; users met later (attributes only, see
:func:`ensure_user_keys`) get keys after them. ``event_profiles (uid, event_id, ts_ms, age_band, gender, country,
language, identity_hash, anonymous, bot)``: the ``profile`` events among them, with the columns only they fill. When
the load reaches back to the lake's beginning (:func:`loaded_history`), :func:`load_attributes` and the duplicate
check read the profile events from there instead of the lake's files again.

Why integer keys and two tables: at 20M events the 32-character pseudonyms, ids and mostly-null demographic columns
held 3.4 GiB in the one table, and every per-user sort and aggregate over them held more (issue 13's 4 GiB bound).
Per-user work runs over key ranges (recstack.profiles.partitions) and joins the pseudonyms back on its few result rows.

:func:`load_catalogue` creates ``item_categories (item_id, category)`` from an item metadata file (the format
``data.source.items_path`` reads). An event's categories, wherever a job counts them, are its item's categories plus
the category it states itself, each once: the item's rows, and the stated one unless the item has it already.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from recstack.data import lake
from recstack.data.schema import DataError
from recstack.data.sources.lake import (
    _HIVE,
    CLIENT_CLOCK_SKEW,
    CLIENT_MAX_DELAY,
    EVENT_TIME_SQL,
    clean_events_sql,
    read_items,
)

HOUR_MS = 3_600_000

__all__ = [
    "HOUR_MS",
    "KEYED_BY_ID",
    "ensure_user_keys",
    "hive_options",
    "lake_days",
    "load_attributes",
    "load_catalogue",
    "load_events",
    "loaded_history",
]

# The event types whose event_id a job reads: the latest profile / preference / survey answer by (ts_ms, event_id),
# and the survey answers joined by it (recstack.profiles.profile_surveys). Other events keep no id (memory).
KEYED_BY_ID: tuple[str, ...] = ("preference", "profile", "survey")
_DEMOGRAPHICS = ("age_band", "gender", "country", "language")


def hive_options() -> str:
    """The ``read_parquet`` options every lake reader uses (hour partitions, old files lacking new columns)."""
    return _HIVE


def lake_days(root: Path, table: str) -> list[date]:
    """The ``dt=`` dates a lake table has files for, oldest first."""
    days = set()
    for part in lake.parts(root, table):
        try:
            days.add(date.fromisoformat(part.parent.parent.name.removeprefix("dt=")))
        except ValueError:
            raise DataError(f"{part}: the partition folder is not dt=YYYY-MM-DD; move it out of the lake") from None
    return sorted(days)


def _globs(root: Path, table: str, days: list[date]) -> list[str]:
    return [str(root / table / f"dt={day.isoformat()}" / "hour=*" / "part-*.parquet") for day in days]


def load_events(con, lake_root: str | Path, start_ms: int, end_ms: int, drop_bots: bool = True) -> int:
    """Create the temporary tables ``events``, ``user_keys`` and ``event_profiles`` (module docstring): events whose
    event time is in ``[start_ms, end_ms)``. Returns the number of events. ``con`` is a DuckDB connection (its time
    zone is set to UTC)."""
    root = Path(lake_root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"no event lake at {root}: the folder does not exist; point lake= (or $RECSTACK_LAKE) at the collector's "
            "lake folder (configs/collector/default.yaml: lake)"
        )
    start = datetime.fromtimestamp(start_ms / 1000, UTC)
    end = datetime.fromtimestamp(end_ms / 1000, UTC)
    # an event's receive time is at most CLIENT_MAX_DELAY after, and CLIENT_CLOCK_SKEW before, its event time
    first_day = (start - CLIENT_CLOCK_SKEW - timedelta(hours=1)).date()
    last_day = (end + CLIENT_MAX_DELAY + timedelta(days=1)).date()
    days = [day for day in lake_days(root, "events") if first_day <= day <= last_day]
    con.execute("SET TimeZone = 'UTC'")
    # The load reads the lake's files several times (the keys, then the copies check and the events), and the
    # attributes, survey answers and duplicate accounts once more each: their footers are parsed once (DuckDB reads
    # a changed file's footer again).
    con.execute("SET parquet_metadata_cache = true")
    con.execute("DROP TABLE IF EXISTS profile_sessions_spec")  # a profile build's sessions of the events replaced
    if not days:
        con.execute(f"CREATE OR REPLACE TEMP TABLE user_keys AS {_EMPTY_KEYS}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE events AS {_EMPTY}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE event_profiles AS {_EMPTY_PROFILES}")
        return 0
    alias_days = [day for day in lake_days(root, "aliases") if day <= last_day]
    receive_start = datetime.combine(first_day, datetime.min.time(), UTC)
    receive_end = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), UTC)
    window = {"start": first_day, "start_ts": receive_start, "end": last_day, "end_ts": receive_end}
    params: dict = {"events": _globs(root, "events", days), **window}
    if alias_days:
        params["aliases"] = _globs(root, "aliases", alias_days)
    # First the few values of the window's events: every pseudonym an event can end with (its own, or an alias row's
    # target), and the event types and device classes (the ENUM types of those columns: a byte each). Reading these
    # columns of the files once more costs far less than carrying the strings through the load.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _lake_values AS
            SELECT user_id, event_type, device_class, grouping(user_id) = 0 AS is_user,
                   grouping(event_type) = 0 AS is_type
            FROM read_parquet($events, {_HIVE})
            WHERE dt >= $start AND dt <= $end AND received_ts >= $start_ts AND received_ts < $end_ts
            GROUP BY GROUPING SETS ((user_id), (event_type), (device_class))""",
        {"events": params["events"], **window},
    )
    targets = (
        f"UNION SELECT user_id FROM read_parquet($aliases, {_HIVE}) "
        "WHERE dt <= $end AND received_ts < $end_ts AND user_id IS NOT NULL"
        if alias_days
        else ""
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE user_keys AS
            SELECT (row_number() OVER (ORDER BY user_id) - 1)::INTEGER AS uid, user_id FROM (
                SELECT user_id FROM _lake_values WHERE is_user AND user_id IS NOT NULL {targets})""",
        {"aliases": params["aliases"], "end": last_day, "end_ts": receive_end} if alias_days else {},
    )
    event_type = _enum(con, "event_type", "is_type")
    device_class = _enum(con, "device_class", "NOT is_user AND NOT is_type")
    con.execute("DROP TABLE _lake_values")
    cleaned = clean_events_sql(profiles_only=False, has_aliases=bool(alias_days))
    keyed = ", ".join(f"'{t}'" for t in KEYED_BY_ID)
    names = {
        d[0]
        for d in con.execute(
            f"SELECT * FROM read_parquet($events, {_HIVE}) LIMIT 0", {"events": params["events"]}
        ).description
    }
    identity = "t.identity_hash" if "identity_hash" in names else "NULL::VARCHAR"  # lakes from before it
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE events AS
            WITH cleaned AS ({cleaned}),
            timed AS (SELECT e.*, {EVENT_TIME_SQL} AS ts_ms FROM cleaned e)
            SELECT k.uid, CASE WHEN t.event_type IN ({keyed}) THEN t.event_id END AS event_id,
                   t.item_id, t.event_type::{event_type} AS event_type, t.value, t.category,
                   t.device_class::{device_class} AS device_class, t.local_hour,
                   {", ".join(f"t.{c}" for c in _DEMOGRAPHICS)}, {identity} AS identity_hash, t.anonymous, t.ts_ms,
                   (t.ts_ms // {HOUR_MS})::INTEGER AS bucket, t.bot
            FROM timed t LEFT JOIN user_keys k USING (user_id)
            WHERE t.ts_ms >= $lo AND t.ts_ms < $hi AND NOT (t.bot AND $drop_bots)""",
        {**params, "lo": start_ms, "hi": end_ms, "drop_bots": bool(drop_bots)},
    )
    # the profile columns are null but in profile events: a table of their own (dropping a column frees it)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE event_profiles AS
            SELECT {", ".join(_PROFILE_COLUMNS)} FROM events WHERE event_type = 'profile'"""
    )
    for column in (*_DEMOGRAPHICS, "identity_hash", "anonymous"):
        con.execute(f"ALTER TABLE events DROP COLUMN {column}")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _events_loaded AS SELECT $lake AS lake, $lo AS start_ms, $hi AS end_ms, "
        "$drop_bots AS drop_bots",
        {"lake": str(root.resolve()), "lo": int(start_ms), "hi": int(end_ms), "drop_bots": bool(drop_bots)},
    )
    return int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])


def loaded_history(con, lake_root: str | Path, as_of_ms: int, drop_bots: bool | None = None) -> bool:
    """Whether :func:`load_events` loaded every event of the lake up to ``as_of_ms`` (a start at or before the
    epoch; ``drop_bots`` the same when given): then ``event_profiles`` holds all the profile events that
    :func:`load_attributes` and the duplicate check (recstack.profiles.quality_duplicates) would read from the lake,
    cleaned the same way, and they read them from there instead of the files."""
    if not _has_table(con, "_events_loaded"):
        return False
    lake_path, start_ms, end_ms, dropped = con.execute("SELECT * FROM _events_loaded").fetchall()[0]
    return (
        lake_path == str(Path(lake_root).expanduser().resolve())
        and start_ms <= 0
        and end_ms > as_of_ms
        and (drop_bots is None or bool(dropped) == bool(drop_bots))
    )


def _enum(con, column: str, rows: str) -> str:
    """The type of a column of few values: an ENUM of the values in ``_lake_values`` (sorted, so that comparing and
    ordering the ENUM agrees with the strings), or VARCHAR when there is none."""
    rows_sql = f"SELECT DISTINCT {column} FROM _lake_values WHERE {rows} AND {column} IS NOT NULL"
    values = [v for (v,) in con.execute(rows_sql).fetchall()]
    if not values:
        return "VARCHAR"
    return "ENUM(" + ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(values)) + ")"


def ensure_user_keys(con) -> None:
    """Give a key (after the others) to each user of ``attributes`` (when loaded) who has none yet: a user with a
    stated profile and no event in the window still has a profile and is evaluated by the rules."""
    if not _has_table(con, "attributes"):
        return
    con.execute(
        """INSERT INTO user_keys
           SELECT ((SELECT coalesce(max(uid), -1) FROM user_keys) + row_number() OVER (ORDER BY user_id))::INTEGER,
                  user_id
           FROM (SELECT DISTINCT user_id FROM attributes WHERE user_id IS NOT NULL
                 EXCEPT SELECT user_id FROM user_keys)"""
    )


def _has_table(con, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0])


_NAMES = [
    "item_id",
    "event_type",
    "value",
    "category",
    "device_class",
    "local_hour",
]  # only what profiles, rules and checks read: every column kept costs load time and memory at 20M events
_EMPTY_KEYS = "SELECT NULL::INTEGER AS uid, NULL::VARCHAR AS user_id WHERE false"
_EMPTY = (
    "SELECT NULL::INTEGER AS uid, NULL::VARCHAR AS event_id, "
    + ", ".join(
        f"NULL::{'DOUBLE' if n == 'value' else 'TINYINT' if n == 'local_hour' else 'VARCHAR'} AS {n}" for n in _NAMES
    )
    + ", NULL::BIGINT AS ts_ms, NULL::INTEGER AS bucket, NULL::BOOLEAN AS bot WHERE false"
)
_PROFILE_COLUMNS = ("uid", "event_id", "ts_ms", *_DEMOGRAPHICS, "identity_hash", "anonymous", "bot")
_EMPTY_PROFILES = (
    "SELECT NULL::INTEGER AS uid, NULL::VARCHAR AS event_id, NULL::BIGINT AS ts_ms, "
    + ", ".join(f"NULL::VARCHAR AS {c}" for c in (*_DEMOGRAPHICS, "identity_hash"))
    + ", NULL::BOOLEAN AS anonymous, NULL::BOOLEAN AS bot WHERE false"
)


def load_catalogue(con, items_path: str | Path | None) -> int:
    """Create ``item_categories`` (from the item metadata file; empty without one). Returns the number of items with
    at least one category."""
    if items_path is None:
        table = pa.table({"item_id": pa.array([], pa.string()), "category": pa.array([], pa.string())})
    else:
        items = read_items(items_path)
        pairs = [(str(i), str(c)) for i, cats in zip(items["item_id"], items["categories"], strict=True) for c in cats]
        table = pa.table(
            {
                "item_id": pa.array([p[0] for p in pairs], pa.string()),
                "category": pa.array([p[1] for p in pairs], pa.string()),
            }
        )
    con.register("_item_categories", table)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE item_categories AS SELECT DISTINCT item_id, category FROM _item_categories"
    )
    con.unregister("_item_categories")
    return int(con.execute("SELECT count(DISTINCT item_id) FROM item_categories").fetchall()[0][0])


def load_attributes(con, lake_root: str | Path, as_of_ms: int, drop_bots: bool = True) -> int:
    """Create ``attributes (user_id, age_band, gender, country, language)``: each user's latest non-null value of each
    demographic column from ``profile`` events of all history up to ``as_of_ms`` (latest by event time, then
    event_id: the order the real-time follower applies too). A profile is state, not behaviour: one stated long ago
    still describes the user. Returns the number of users. Reads ``event_profiles`` when :func:`load_events` loaded
    all of this history (:func:`loaded_history`), else the lake."""
    root = Path(lake_root).expanduser()
    columns = _DEMOGRAPHICS
    latest = ", ".join(f"arg_max({c}, (ts_ms, event_id)) FILTER (WHERE {c} IS NOT NULL) AS {c}" for c in columns)
    if loaded_history(con, root, as_of_ms, drop_bots):  # the profile events are loaded already: no second read
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE attributes AS
                SELECT k.user_id, {latest} FROM event_profiles e JOIN user_keys k USING (uid)
                WHERE e.ts_ms <= $hi GROUP BY k.user_id""",
            {"hi": int(as_of_ms)},
        )
        return int(con.execute("SELECT count(*) FROM attributes").fetchall()[0][0])
    as_of = datetime.fromtimestamp(as_of_ms / 1000, UTC)
    last_day = (as_of + CLIENT_MAX_DELAY + timedelta(days=1)).date()
    days = [day for day in lake_days(root, "events") if day <= last_day] if root.is_dir() else []
    con.execute("SET TimeZone = 'UTC'")
    if not days:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE attributes AS SELECT NULL::VARCHAR AS user_id, "
            + ", ".join(f"NULL::VARCHAR AS {c}" for c in columns)
            + " WHERE false"
        )
        return 0
    alias_days = [day for day in lake_days(root, "aliases") if day <= last_day]
    params: dict = {
        "events": _globs(root, "events", days),
        "end": last_day,
        "end_ts": datetime.combine(last_day + timedelta(days=1), datetime.min.time(), UTC),
        "hi": as_of_ms,
        "drop_bots": bool(drop_bots),
    }
    if alias_days:
        params["aliases"] = _globs(root, "aliases", alias_days)
    cleaned = clean_events_sql(profiles_only=True, has_aliases=bool(alias_days))
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE attributes AS
            WITH cleaned AS ({cleaned}),
            timed AS (SELECT e.*, {EVENT_TIME_SQL} AS ts_ms FROM cleaned e)
            SELECT user_id, {latest} FROM timed
            WHERE ts_ms <= $hi AND NOT (bot AND $drop_bots)
            GROUP BY user_id""",
        params,
    )
    return int(con.execute("SELECT count(*) FROM attributes").fetchall()[0][0])
