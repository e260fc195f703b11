"""The lake's impressions and events of one window, loaded once into DuckDB temporary tables that every later query
reads (``imp`` and ``ev``), so the Parquet files are decoded once per run.

* ``imp``: one row per served list (``request_id`` deduplicated: the copy received first), with ``rid``/``uid`` the
  request and user ids and ``items`` the shown items as 64-bit hashes (``uid`` NULL for a first visit without an
  id), ``ts`` the serve time in epoch ms, ``day`` its UTC day number (days since 1970-01-01), ``gid`` its series,
  ``scores`` and ``n_items``;
* ``series``: ``gid`` -> ``bundle``, ``experiment``, ``arm`` as text (``''`` when there is no experiment);
* ``ev``: the item events that can be attributed or count as an outcome (``uid``, ``item``, ``rid`` hashed the same
  way), with ``ts`` the event time of the lake's one rule (:data:`recstack.data.sources.lake.EVENT_TIME_SQL`: the
  client's clock when plausible, else the receive time); crawlers (``device_class = 'bot'``) are left out unless
  asked for.

Only the ``dt=`` folders of the window are listed and opened (one glob per day), so an old lake costs nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

from recstack.data.sources.lake import EVENT_TIME_SQL
from recstack.monitoring.spec import DAY_MS, MetricSpec, MonitorError

_DAY_DIR = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
_HIVE = "hive_partitioning=true, union_by_name=true, hive_types={'dt': DATE, 'hour': INTEGER}"
EPOCH = date(1970, 1, 1)


def day_number(day: date) -> int:
    return (day - EPOCH).days


def day_of(number: int) -> date:
    return EPOCH + timedelta(days=int(number))


def table_days(lake_root: str | Path, table: str) -> list[date]:
    """The UTC days holding at least one committed file of ``table``, oldest first (folder names only, no reads)."""
    root = Path(lake_root) / table
    if not root.is_dir():
        return []
    days = []
    for folder in root.iterdir():
        match = _DAY_DIR.match(folder.name)
        if match and folder.is_dir() and any(folder.glob("hour=*/part-*.parquet")):
            days.append(date.fromisoformat(match.group(1)))
    return sorted(days)


def check_lake(lake_root: str | Path) -> list[date]:
    """The days with impressions, or a :class:`MonitorError` saying why the lake cannot be monitored."""
    root = Path(lake_root).expanduser()
    if not root.is_dir():
        raise MonitorError(
            f"no event lake at {root}: the folder does not exist; point lake= (or $RECSTACK_LAKE) at the collector's "
            "lake folder"
        )
    days = table_days(root, "impressions")
    if not days:
        raise MonitorError(
            f"the lake {root} holds no impressions ({root / 'impressions'} has no part files): the service records "
            "them when it serves with the collector on; nothing to monitor yet"
        )
    return days


def connect(threads: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{str(memory_limit).replace(chr(39), '')}'")
    return con


def _day_globs(lake_root: Path, table: str, first: date, last: date) -> list[str]:
    """One glob per existing ``dt=`` folder of ``[first, last]`` that holds files (DuckDB refuses an empty glob)."""
    globs = []
    day = first
    while day <= last:
        folder = lake_root / table / f"dt={day.isoformat()}"
        if folder.is_dir() and any(folder.glob("hour=*/part-*.parquet")):
            globs.append(str(folder / "hour=*" / "part-*.parquet"))
        day += timedelta(days=1)
    return globs


def _hashed(column: str) -> str:
    """``hash(column)``, NULL staying NULL (DuckDB hashes NULL to a constant)."""
    return f"CASE WHEN {column} IS NULL THEN NULL ELSE hash({column}) END"


def _source(globs: list[str], empty: str) -> str:
    if not globs:
        return f"({empty})"
    listed = ", ".join("'" + g.replace("'", "''") + "'" for g in globs)
    return f"read_parquet([{listed}], {_HIVE})"


_EMPTY_IMPRESSIONS = """SELECT NULL::VARCHAR AS request_id, NULL::VARCHAR AS user_id, NULL::VARCHAR[] AS items,
    NULL::FLOAT[] AS scores, NULL::VARCHAR AS bundle, NULL::VARCHAR AS experiment, NULL::VARCHAR AS arm,
    NULL::TIMESTAMPTZ AS received_ts, NULL::VARCHAR AS stream_id WHERE false"""
_EMPTY_EVENTS = """SELECT NULL::VARCHAR AS user_id, NULL::VARCHAR AS item_id, NULL::VARCHAR AS event_type,
    NULL::VARCHAR AS request_id, NULL::VARCHAR AS device_class, NULL::TIMESTAMPTZ AS client_ts,
    NULL::TIMESTAMPTZ AS received_ts WHERE false"""


@dataclass(frozen=True)
class Loaded:
    """What :func:`load` put in the ``imp`` and ``ev`` tables."""

    first_day: date
    last_day: date
    impressions: int
    duplicate_impressions: int  # rows dropped as second copies of a request_id
    events: int
    last_event_ms: int | None  # the latest event time loaded: how far outcome windows are complete


def load(
    con: duckdb.DuckDBPyConnection,
    lake_root: str | Path,
    first_day: date,
    last_day: date,
    spec: MetricSpec,
    *,
    drop_bots: bool = True,
) -> Loaded:
    """Load impressions served on ``[first_day, last_day]`` (UTC) and the events that may follow them (up to the
    longer of the two windows after ``last_day``) into ``imp`` and ``ev``."""
    root = Path(lake_root).expanduser()
    start_ms = day_number(first_day) * DAY_MS
    end_ms = (day_number(last_day) + 1) * DAY_MS
    imp_source = _source(_day_globs(root, "impressions", first_day, last_day), _EMPTY_IMPRESSIONS)
    in_window = f"""received_ts >= make_timestamptz({start_ms}::BIGINT * 1000)
        AND received_ts < make_timestamptz({end_ms}::BIGINT * 1000) AND items IS NOT NULL"""
    # The series an impression belongs to (bundle, experiment, arm) as one integer, so aggregations over 100M slots
    # group by numbers; ``series`` maps it back to the names (hashed as stored, shown with '' for no experiment).
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE series AS
        SELECT hash(bundle, experiment, arm) AS gid, coalesce(bundle, '(unknown)') AS bundle,
               coalesce(experiment, '') AS experiment, coalesce(arm, '') AS arm
        FROM (SELECT DISTINCT bundle, experiment, arm FROM {imp_source})
    """)
    # Ids and items are kept as 64-bit hashes: joins and list searches on integers, and a table a fraction of the
    # size of 100M strings (two different ids sharing a hash: about n^2 / 2^65, 3e-6 at 10M impressions).
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE imp AS
        SELECT hash(request_id) AS rid, {_hashed("user_id")} AS uid, epoch_ms(received_ts) AS ts,
               (epoch_ms(received_ts) // {DAY_MS})::INTEGER AS day, hash(bundle, experiment, arm) AS gid,
               list_transform(items, lambda x: hash(x)) AS items, scores, len(items)::INTEGER AS n_items
        FROM {imp_source} WHERE {in_window}
    """)
    # A request_id stored twice (a replayed stream entry) counts once: the copy served first stays.
    duplicates = con.execute("SELECT count(*) - count(DISTINCT rid) FROM imp").fetchall()[0][0]
    if duplicates:
        con.execute("""
            DELETE FROM imp WHERE rowid IN (
                SELECT rowid FROM imp WHERE rid IN (SELECT rid FROM imp GROUP BY rid HAVING count(*) > 1)
                QUALIFY row_number() OVER (PARTITION BY rid ORDER BY ts, rowid) > 1
            )
        """)
    impressions = con.execute("SELECT count(*) FROM imp").fetchall()[0][0]

    # Events: a client clock may run up to minutes ahead of receipt, and a late event is received days after it
    # happened, so the folders read reach a day before the window and past its end by the longer window plus a day.
    reach = max(spec.outcome_window_ms, spec.attribution_window_ms)
    ev_last = day_of((end_ms + reach) // DAY_MS + 1)
    ev_source = _source(_day_globs(root, "events", first_day - timedelta(days=1), ev_last), _EMPTY_EVENTS)
    types = ", ".join("'" + t.replace("'", "''") + "'" for t in {*spec.attributed_events, *spec.outcome_events})
    bots = "AND e.device_class IS DISTINCT FROM 'bot'" if drop_bots else ""
    # Files written before a column was declared lack it (request_id came with the impressions): read it as NULL.
    present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {ev_source}").fetchall()}
    optional = {"request_id": "VARCHAR", "device_class": "VARCHAR", "client_ts": "TIMESTAMPTZ"}
    fill = ", ".join(f"NULL::{kind} AS {name}" for name, kind in optional.items() if name not in present)
    ev_source = f"(SELECT *{', ' + fill if fill else ''} FROM {ev_source})"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE ev AS
        SELECT * FROM (
            SELECT {_hashed("e.user_id")} AS uid, hash(e.item_id) AS item, e.event_type,
                   {_hashed("e.request_id")} AS rid, {EVENT_TIME_SQL} AS ts
            FROM {ev_source} e
            WHERE e.event_type IN ({types}) AND e.item_id IS NOT NULL AND e.user_id IS NOT NULL {bots}
        ) WHERE ts >= {start_ms} AND ts < {end_ms + reach}
    """)
    events, last_event = con.execute("SELECT count(*), max(ts) FROM ev").fetchall()[0]
    return Loaded(first_day, last_day, impressions, int(duplicates or 0), events, last_event)


def parse_day(value: object) -> date | None:
    """``day=`` as a date (``YYYY-MM-DD``, or an ISO time whose UTC date is taken); None stays None."""
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    text = str(value).strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MonitorError(f"day={value!r} is not a date; give YYYY-MM-DD (UTC), e.g. day=2026-12-06") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).date()


def newest_event_ms(con: duckdb.DuckDBPyConnection, lake_root: str | Path) -> int | None:
    """The latest receive time of any event in the lake (its newest day folder only): how far collection has got,
    so whether an impression's outcome window is over."""
    days = table_days(lake_root, "events")
    if not days:
        return None
    globs = _day_globs(Path(lake_root).expanduser(), "events", days[-1], days[-1])
    value = con.execute(f"SELECT max(epoch_ms(received_ts)) FROM {_source(globs, _EMPTY_EVENTS)}").fetchall()[0][0]
    return None if value is None else int(value)
