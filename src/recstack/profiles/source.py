"""The events profiles and segments are computed from, as DuckDB tables: one definition for every batch job here.

:func:`load_events` reads the event lake (recstack.data.lake) for a time range with the same cleaning rules as
``prepare data=lake`` (recstack.data.sources.lake.clean_events_sql: each event once, anonymous ids merged into the user
they were identified as, a ``bot`` flag) and the same event time (``event_time_ms``: the client's clock when plausible,
else the receive time). It creates the temporary table ``events``:

==================  ==========================================================================================
user_id             pseudonym (after aliases)
item_id             the product, or NULL for page-level events
event_type          view, click, ..., profile
value               rating, dwell ms, scroll depth, preference score
ts_ms               event time, epoch milliseconds (UTC)
bucket              ``ts_ms // 3_600_000``: the UTC hour, the unit every rolling window is counted in
category            the category a ``preference`` event scores (stated, not the item's)
device_class        the device class (desktop, mobile, tablet, bot, ...)
local_hour          the client's local hour of day when it sent one
age_band ...        the demographic columns of ``profile`` events
bot                 device_class = 'bot'
==================  ==========================================================================================

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

__all__ = ["HOUR_MS", "hive_options", "lake_days", "load_catalogue", "load_events"]


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
    """Create the temporary table ``events`` (module docstring): events whose event time is in ``[start_ms,
    end_ms)``. Returns its row count. ``con`` is a DuckDB connection (its time zone is set to UTC)."""
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
    if not days:
        con.execute(f"CREATE OR REPLACE TEMP TABLE events AS {_EMPTY}")
        return 0
    alias_days = [day for day in lake_days(root, "aliases") if day <= last_day]
    receive_start = datetime.combine(first_day, datetime.min.time(), UTC)
    receive_end = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), UTC)
    params: dict = {
        "events": _globs(root, "events", days),
        "start": first_day,
        "start_ts": receive_start,
        "end": last_day,
        "end_ts": receive_end,
        "lo": start_ms,
        "hi": end_ms,
        "drop_bots": bool(drop_bots),
    }
    if alias_days:
        params["aliases"] = _globs(root, "aliases", alias_days)
    cleaned = clean_events_sql(profiles_only=False, has_aliases=bool(alias_days))
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE events AS
            WITH cleaned AS ({cleaned}),
            timed AS (SELECT e.*, {EVENT_TIME_SQL} AS ts_ms FROM cleaned e)
            SELECT {_COLUMNS}, ts_ms // {HOUR_MS} AS bucket, bot FROM timed
            WHERE ts_ms >= $lo AND ts_ms < $hi AND NOT (bot AND $drop_bots)
            """,
        params,
    )
    return int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])


_NAMES = [
    "event_id",
    "user_id",
    "item_id",
    "event_type",
    "value",
    "category",
    "device_class",
    "local_hour",
    "age_band",
    "gender",
    "country",
    "language",
]  # only what profiles, rules and checks read: every column kept costs load time and memory at 20M events
_COLUMNS = ", ".join(_NAMES) + ", ts_ms"
_EMPTY = (
    "SELECT "
    + ", ".join(
        f"NULL::{'DOUBLE' if n == 'value' else 'TINYINT' if n == 'local_hour' else 'VARCHAR'} AS {n}" for n in _NAMES
    )
    + ", NULL::BIGINT AS ts_ms, NULL::BIGINT AS bucket, NULL::BOOLEAN AS bot WHERE false"
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
    still describes the user. Returns the number of users."""
    root = Path(lake_root).expanduser()
    as_of = datetime.fromtimestamp(as_of_ms / 1000, UTC)
    last_day = (as_of + CLIENT_MAX_DELAY + timedelta(days=1)).date()
    days = [day for day in lake_days(root, "events") if day <= last_day] if root.is_dir() else []
    con.execute("SET TimeZone = 'UTC'")
    columns = ("age_band", "gender", "country", "language")
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
    latest = ", ".join(f"arg_max({c}, (ts_ms, event_id)) FILTER (WHERE {c} IS NOT NULL) AS {c}" for c in columns)
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
