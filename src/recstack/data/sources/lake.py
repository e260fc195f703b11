"""The event lake (:mod:`recstack.data.lake`) as a training source: ``recstack-data prepare data=lake``.

What the collector stored becomes a :class:`~recstack.data.schema.Dataset`, read with DuckDB straight from the
hour-partitioned Parquet files:

* **window**: whole UTC dates ``[start, end]`` (both included; by default the last ``window_days`` dates up to today),
  applied to the ``dt`` partition column, so DuckDB opens only those files, and to ``received_ts``.
* **exactly once**: an event stored twice (a retried request, a replayed stream entry) counts once, the copy
  received first (``event_id``).
* **one person, one id**: a visitor who signed in (``aliases``: anonymous pseudonym -> user pseudonym, the latest
  link wins) has their anonymous history merged into the user's.
* **bots** (``device_class = 'bot'``) are dropped by default: crawlers' views would teach popularity of what they crawl.
* **interactions** are item-level events whose type has a weight; the weight is the interaction ``value`` (a rating
  weighs its stars), ``event_type`` keeps the original type. Dwells count only from ``dwell_threshold_ms``; page-level
  events (no item: search, profile, preference, survey) and unweighted types (scroll by default) are not interactions.
  What is left out is counted in one log line, never silently.
* **time**: the client's clock when it is plausible (not ahead of receipt by more than a clock skew, not older than
  an offline queue holds), else the receive time.
* **users**: each user's latest non-null profile attributes from ``profile`` events up to the window's end (a profile
  is state, not behaviour: one given before the window still describes the user).
* **items**: none, unless ``items_path`` names an item metadata file (``item_id,title[,year,categories,text]``).

:func:`lake_snapshot` names the lake's current files, so a prepared split is rebuilt when the lake has grown (see
:meth:`recstack.data.build_split.SplitSpec.from_config`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recstack.data import lake
from recstack.data.schema import DataError, Dataset, empty_items, empty_users
from recstack.data.sources.columns import interactions_frame, items_frame, users_frame

log = logging.getLogger(__name__)

# Event types about one item (an interaction when weighted) and about the page or the person (never interactions).
# The types the collector accepts (recstack.collect.events, a layer above, so not imported; a test keeps them equal).
# A weight for any other name is a typo that would silently weigh nothing.
ITEM_EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating", "dwell", "scroll")
PAGE_EVENT_TYPES: tuple[str, ...] = ("search", "profile", "preference", "survey")
PROFILE_COLUMNS: tuple[str, ...] = ("age_band", "gender", "country", "language")
USE_VALUE = "value"  # the weight of a type that carries its own (a rating's stars)
# The same numbers as configs/data/lake.yaml (tests keep the two equal); for callers outside Hydra.
DEFAULT_WEIGHTS: dict[str, float | str] = {
    "purchase": 5.0,
    "add_to_cart": 3.0,
    "rating": USE_VALUE,
    "click": 1.0,
    "view": 0.5,
    "dwell": 1.0,
}
DEFAULT_DWELL_THRESHOLD_MS = 10_000.0
# A client clock more than this ahead of our receipt is wrong; an event queued offline longer than this is stale news.
CLIENT_CLOCK_SKEW = timedelta(minutes=5)
CLIENT_MAX_DELAY = timedelta(days=7)


def event_time_ms(client_ms: int | None, received_ms: int) -> int:
    """When an event happened: the client's clock when it is plausible (not ahead of receipt by more than
    CLIENT_CLOCK_SKEW, not older than CLIENT_MAX_DELAY), else the receive time. The SQL twin is
    :data:`EVENT_TIME_SQL` (and ``_INTERACTIONS_SQL``); the real-time segment follower uses this one."""
    skew = int(CLIENT_CLOCK_SKEW.total_seconds() * 1000)
    delay = int(CLIENT_MAX_DELAY.total_seconds() * 1000)
    if client_ms is not None and received_ms - delay <= client_ms <= received_ms + skew:
        return int(client_ms)
    return int(received_ms)


# event_time_ms over a lake row ``e`` (DuckDB), epoch milliseconds
EVENT_TIME_SQL = (
    f"epoch_ms(CASE WHEN e.client_ts BETWEEN e.received_ts - INTERVAL {int(CLIENT_MAX_DELAY.total_seconds())} SECOND "
    f"AND e.received_ts + INTERVAL {int(CLIENT_CLOCK_SKEW.total_seconds())} SECOND THEN e.client_ts ELSE e.received_ts END)"
)
_HIVE = "hive_partitioning=true, union_by_name=true, hive_types={'dt': DATE, 'hour': INTEGER}"


@dataclass(frozen=True)
class LakeWindow:
    """Whole UTC dates, both included."""

    start: date
    end: date

    @property
    def start_ts(self) -> datetime:
        return datetime.combine(self.start, time(), UTC)

    @property
    def end_ts(self) -> datetime:
        """Exclusive: midnight after ``end``."""
        return datetime.combine(self.end + timedelta(days=1), time(), UTC)

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()} (UTC dates, both included)"


def _as_date(value: date | datetime | str, what: str) -> date:
    if isinstance(value, datetime):
        return _as_datetime(value, what).astimezone(UTC).date()
    if isinstance(value, date):
        return value
    try:
        return _as_datetime(str(value), what).astimezone(UTC).date()
    except DataError:
        raise DataError(f"data.source.{what}={value!r} is not a date; write YYYY-MM-DD") from None


def _as_datetime(value: datetime | str, what: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise DataError(f"data.source.{what}={value!r} is not an ISO-8601 time (e.g. 2026-12-06T12:00:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def resolve_window(
    window_days: int | None = 90,
    start: date | datetime | str | None = None,
    end: date | datetime | str | None = None,
    now: datetime | str | None = None,
) -> LakeWindow:
    """``start``/``end`` when given; a missing end is today (UTC, of ``now``), a missing start ``window_days`` dates
    back from the end, the end included. Whole dates, so the same config names the same window all day long."""
    moment = datetime.now(UTC) if now is None else _as_datetime(now, "now")
    last = _as_date(end, "end") if end is not None else moment.astimezone(UTC).date()
    if start is not None:
        first = _as_date(start, "start")
    elif isinstance(window_days, int) and not isinstance(window_days, bool) and window_days >= 1:
        first = last - timedelta(days=window_days - 1)
    else:
        raise DataError(f"data.source.window_days={window_days!r}: give a whole number of days >= 1, or start=")
    if first > last:
        raise DataError(f"data.source: the window starts ({first}) after it ends ({last}); swap start and end")
    return LakeWindow(first, last)


def _dated_parts(root: Path, table: str, last: date | None = None) -> list[tuple[date, Path]]:
    """A table's part files with their ``dt=`` date (up to ``last``), oldest first."""
    out = []
    for part in lake.parts(root, table):
        try:
            day = date.fromisoformat(part.parent.parent.name.removeprefix("dt="))
        except ValueError:  # not written by the lake's writer; DuckDB would fail on it later, so say where now
            raise DataError(f"{part}: the partition folder is not dt=YYYY-MM-DD; move it out of the lake") from None
        if last is None or day <= last:
            out.append((day, part))
    return out


def lake_snapshot(
    path: str | Path,
    window_days: int | None = 90,
    start: date | datetime | str | None = None,
    end: date | datetime | str | None = None,
    now: datetime | str | None = None,
) -> dict[str, Any]:
    """What a prepared split of the lake depends on beyond its config: the resolved window and a digest of the names,
    sizes and modification times of every part file up to the window's end (listing and ``stat`` only, no reads).

    A new hour file, a late file in an old hour, a rewritten partition (an erasure) or a new day all change it, so the
    prepared-split cache key that includes it never serves a split of an older lake.
    """
    root = Path(path).expanduser()
    window = resolve_window(window_days, start, end, now)
    files = [part for table in ("events", "aliases") for _, part in _dated_parts(root, table, window.end)]
    digest = hashlib.sha256()
    for part in files:
        stat = part.stat()
        digest.update(f"{part.relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return {
        "window": [window.start.isoformat(), window.end.isoformat()],
        "files": len(files),
        "digest": digest.hexdigest()[:16],
    }


def _weights_table(weights: Mapping[str, Any], dwell_threshold_ms: float) -> pa.Table:
    """One row per weighted type: its constant weight, or whether its own value is the weight."""
    rows: list[tuple[str, float | None, bool]] = []  # (type, constant weight, its own value is the weight)
    for event_type, weight in weights.items():
        if event_type in PAGE_EVENT_TYPES:
            raise DataError(
                f"data.source.weights.{event_type}: {event_type!r} events are page-level (no item), so they cannot "
                f"be interactions; weigh item events only: {list(ITEM_EVENT_TYPES)}"
            )
        if event_type not in ITEM_EVENT_TYPES:
            raise DataError(
                f"data.source.weights: unknown event type {event_type!r}; the lake's item events are "
                f"{list(ITEM_EVENT_TYPES)} (remove the key or fix its spelling)"
            )
        if weight is None:  # explicitly not an interaction
            continue
        if weight == USE_VALUE:
            rows.append((event_type, None, True))
        elif isinstance(weight, int | float) and not isinstance(weight, bool) and math.isfinite(weight):
            rows.append((event_type, float(weight), False))
        else:
            raise DataError(
                f"data.source.weights.{event_type}={weight!r}: a weight is a finite number, {USE_VALUE!r} (the event's "
                "own value) or null (not an interaction)"
            )
    if not rows:
        raise DataError("data.source.weights: no event type has a weight, so nothing would be an interaction")
    if not isinstance(dwell_threshold_ms, int | float) or isinstance(dwell_threshold_ms, bool):
        raise DataError(f"data.source.dwell_threshold_ms={dwell_threshold_ms!r}: give a number of milliseconds")
    types, constant, own = zip(*rows, strict=True)
    return pa.table(
        {
            "event_type": pa.array(types, pa.string()),
            "weight": pa.array(constant, pa.float64()),
            "own_value": pa.array(own, pa.bool_()),
        }
    )


def _day_globs(root: Path, table: str, days: list[date]) -> list[str]:
    """One glob per ``dt=`` folder: DuckDB then lists, and reads the footers of, only these days' files (a glob over
    the whole table would open every file's footer for ``union_by_name``, however old)."""
    folders = {lake.partition_dir(root, table, datetime.combine(day, time(), UTC)).parent for day in days}
    return [str(folder / "hour=*" / "part-*.parquet") for folder in sorted(folders)]


MERGE_STREAM_ID = (
    "profiles:merge"  # the stream_id of an aliases row that merges a duplicate account (recstack.profiles)
)


def _once_sql(small: bool) -> str:
    """The CTE ``once``: each row of ``raw`` once per event_id (the copy received first), with its ``copies``."""
    window = """SELECT *, count(*) OVER (PARTITION BY event_id) AS copies FROM {source}
            QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_ts, stream_id NULLS LAST, filename) = 1"""
    if small:  # profile events only: one window is cheapest
        return f"once AS ({window.format(source='raw')}),"
    # Copies are rare: a window over every event (wide rows, partitioned per event_id) costs most of a large load (33
    # -> 17 s and 9 -> 4.4 GiB at 20M events), so only events whose id's 64-bit hash occurs more than once go through
    # it; a hash collision merely sends an event there too, where partitions are by the id itself.
    repeated_rows = "(SELECT r.* FROM raw r SEMI JOIN repeated ON hash(r.event_id) = repeated.h)"
    return f"""repeated AS (SELECT hash(event_id) AS h FROM raw GROUP BY h HAVING count(*) > 1),
        once AS (
            SELECT r.*, 1::BIGINT AS copies FROM raw r ANTI JOIN repeated ON hash(r.event_id) = repeated.h
            UNION ALL BY NAME
            SELECT * FROM ({window.format(source=repeated_rows)})
        ),"""


def clean_events_sql(*, profiles_only: bool, has_aliases: bool) -> str:
    """Events in the window (``profiles_only``: profile events up to its end, whenever they began), each event once,
    ids replaced by the account they belong to, with a ``bot`` flag. ``$events``/``$aliases``: the day globs to read;
    the ``dt`` filter repeats the window so DuckDB also prunes by the partition column.

    Two kinds of alias rows: ``POST /identify`` links (visitor pseudonym -> account; applied to anonymous events only)
    and merges of duplicate accounts that share an e-mail hash (``stream_id`` = :data:`MERGE_STREAM_ID`, written by
    ``recstack-profiles``: account -> canonical account; applied to signed-in events only). A visitor identified as
    an account that was later merged follows it to the canonical account. The latest row of each kind wins."""
    bounds = "AND event_type = 'profile'" if profiles_only else "AND dt >= $start AND received_ts >= $start_ts"
    aliases = (
        f"""SELECT anonymous_id, user_id, merge FROM (
                SELECT *, coalesce(stream_id = '{MERGE_STREAM_ID}', false) AS merge FROM read_parquet($aliases, {_HIVE})
                WHERE dt <= $end AND received_ts < $end_ts)
            QUALIFY row_number() OVER (
                PARTITION BY anonymous_id, merge
                ORDER BY received_ts DESC, stream_id DESC NULLS LAST, user_id DESC) = 1"""
        if has_aliases
        else "SELECT NULL::VARCHAR AS anonymous_id, NULL::VARCHAR AS user_id, NULL::BOOLEAN AS merge WHERE false"
    )
    return f"""
        WITH raw AS NOT MATERIALIZED (
            SELECT * FROM read_parquet($events, {_HIVE}, filename=true)
            WHERE dt <= $end AND received_ts < $end_ts {bounds}
        ),
        {_once_sql(small=profiles_only)}
        latest_alias AS ({aliases}),
        resolved AS (
            SELECT a.anonymous_id, a.merge, coalesce(b.user_id, a.user_id) AS user_id
            FROM latest_alias a LEFT JOIN latest_alias b ON b.merge AND a.user_id = b.anonymous_id
        )
        SELECT coalesce(a.user_id, e.user_id) AS user_id, e.* EXCLUDE (user_id),
               e.device_class IS NOT DISTINCT FROM 'bot' AS bot
        FROM once e LEFT JOIN resolved a ON e.user_id = a.anonymous_id AND e.anonymous <> a.merge
    """


_INTERACTIONS_SQL = f"""
    SELECT e.user_id, e.item_id, e.event_type,
           CASE WHEN w.own_value THEN e.value ELSE w.weight END AS weight,
           {EVENT_TIME_SQL} // 1000 AS ts
    FROM windowed e JOIN weights w USING (event_type)
    WHERE NOT (e.bot AND $drop_bots) AND e.item_id IS NOT NULL
      AND (e.event_type <> 'dwell' OR e.value >= $dwell)
      AND isfinite(CASE WHEN w.own_value THEN e.value ELSE w.weight END)
    ORDER BY ts, e.user_id, e.item_id, e.event_id  -- DuckDB's parallel scan has no order; the split's seed needs one
"""

# Why each event in the window is, or is not, an interaction: the one log line that accounts for every row.
_OUTCOMES_SQL = """
    SELECT CASE
        WHEN e.bot AND $drop_bots THEN 'bot'
        WHEN e.item_id IS NULL THEN 'page-level'
        WHEN w.event_type IS NULL THEN 'unweighted ' || e.event_type
        WHEN e.event_type = 'dwell' AND NOT coalesce(e.value >= $dwell, false) THEN 'short dwell'
        WHEN NOT coalesce(isfinite(CASE WHEN w.own_value THEN e.value ELSE w.weight END), false)
            THEN 'no value for ' || e.event_type
        ELSE 'interaction' END AS outcome, count(*) AS n
    FROM windowed e LEFT JOIN weights w USING (event_type)
    GROUP BY ALL ORDER BY n DESC
"""

_PROFILES_SQL = (
    "SELECT user_id, "
    + ", ".join(f"arg_max({c}, received_ts) FILTER (WHERE {c} IS NOT NULL) AS {c}" for c in PROFILE_COLUMNS)
    + " FROM profiles WHERE event_type = 'profile' AND NOT (bot AND $drop_bots) GROUP BY user_id ORDER BY user_id"
)


def load_lake(
    path: str | Path,
    window_days: int | None = 90,
    start: date | datetime | str | None = None,
    end: date | datetime | str | None = None,
    now: datetime | str | None = None,
    weights: Mapping[str, Any] | None = None,
    dwell_threshold_ms: float = DEFAULT_DWELL_THRESHOLD_MS,
    drop_bots: bool = True,
    items_path: str | Path | None = None,
    name: str = "lake",
) -> Dataset:
    """The lake at ``path`` as a ``Dataset`` (see the module docstring); ``weights`` default to
    :data:`DEFAULT_WEIGHTS`: event type -> a number, ``"value"`` (the event's own value) or ``None`` (not counted)."""
    import duckdb  # here, not at the top: build_split imports this module for lake_snapshot, which needs no DuckDB

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"no event lake at {root}: the folder does not exist; set data.source.path= (or $RECSTACK_LAKE) to the "
            "collector's lake folder (configs/collector/default.yaml: lake)"
        )
    window = resolve_window(window_days, start, end, now)
    weight_table = _weights_table(DEFAULT_WEIGHTS if weights is None else weights, dwell_threshold_ms)
    days = sorted({day for day, _ in _dated_parts(root, "events")})
    if not days:
        raise DataError(f"{root}: the lake has no events yet ({root / 'events'} holds no part files)")
    empty_window = DataError(
        f"{root}: no events in the window {window}; the newest partition is dt={max(days)}. Widen "
        "data.source.window_days, or set data.source.end= (or now=) to a date with data"
    )
    in_window = [day for day in days if window.start <= day <= window.end]
    if not in_window:
        raise empty_window  # before DuckDB, which would only say that no file matches
    alias_days = sorted({day for day, _ in _dated_parts(root, "aliases", window.end)})
    bounds = {"end": window.end, "end_ts": window.end_ts}
    if alias_days:
        bounds["aliases"] = _day_globs(root, "aliases", alias_days)
    params = {
        **bounds,
        "start": window.start,
        "start_ts": window.start_ts,
        "events": _day_globs(root, "events", in_window),
    }
    profile_params = {**bounds, "events": _day_globs(root, "events", [day for day in days if day <= window.end])}
    try:
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            con.register("weights", weight_table)
            windowed = clean_events_sql(profiles_only=False, has_aliases=bool(alias_days))
            con.execute(f"CREATE TEMP TABLE windowed AS {windowed}", params)
            profiles = clean_events_sql(profiles_only=True, has_aliases=bool(alias_days))
            con.execute(f"CREATE TEMP TABLE profiles AS {profiles}", profile_params)
            n_events, n_copies, n_files = con.execute(
                "SELECT count(*), coalesce(sum(copies), 0), count(DISTINCT filename) FROM windowed"
            ).fetchone()
            stats = {"drop_bots": bool(drop_bots), "dwell": float(dwell_threshold_ms)}
            outcomes = dict(con.execute(_OUTCOMES_SQL, stats).fetchall())
            table = con.sql(_INTERACTIONS_SQL, params=stats).to_arrow_table()
            users_table = con.sql(_PROFILES_SQL, params={"drop_bots": bool(drop_bots)}).to_arrow_table()
    except duckdb.Error as err:
        raise DataError(
            f"{root}: the lake could not be read ({' '.join(str(err).split())}); a damaged or foreign file under "
            "events/ or aliases/? Move it out of the lake and prepare again"
        ) from None
    if n_events == 0:
        raise empty_window
    accounts = ", ".join(f"{outcome} {n:,}" for outcome, n in outcomes.items())
    log.info(
        "lake %s, window %s: %s events in %s files (%s duplicate copies dropped): %s",
        root,
        window,
        f"{n_events:,}",
        n_files,
        f"{n_copies - n_events:,}",
        accounts,
    )
    if table.num_rows == 0:
        raise DataError(
            f"{root}: no interactions in the window {window}: of its {n_events:,} events, {accounts}; "
            "check data.source.weights, dwell_threshold_ms and drop_bots"
        )
    interactions = interactions_frame(
        table["user_id"],
        table["item_id"],
        table["ts"].to_numpy(),
        table["weight"].to_numpy().astype(np.float32),
        table["event_type"],
    )
    users = (
        users_frame(users_table["user_id"], **{c: users_table[c] for c in PROFILE_COLUMNS})
        if users_table.num_rows
        else empty_users()
    )
    items = read_items(items_path) if items_path else empty_items()
    return Dataset(name, interactions, items, users, source=f"lake:{root}")


def read_items(path: str | Path) -> pd.DataFrame:
    """Item metadata: CSV/TSV or Parquet with ``item_id,title`` and optionally ``year``, ``categories`` (a list, or
    text separated by ``|``) and ``text``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such item metadata file; set data.source.items_path= a CSV or Parquet file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif suffix in (".csv", ".tsv"):
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    else:
        raise DataError(f"{path}: unknown item metadata format {suffix!r}; use .csv, .tsv or .parquet")
    missing = [c for c in ("item_id", "title") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(frame.columns)} (need item_id,title)")
    ids = frame["item_id"].astype("str").str.strip()
    blank = frame["item_id"].isna() | (ids == "")
    if blank.any():
        raise DataError(f"{path}: row {int(np.flatnonzero(blank.to_numpy())[0]) + 1}: item_id is empty")
    n = len(frame)
    year = pd.Series(np.nan, index=frame.index)
    if "year" in frame.columns:
        year = pd.to_numeric(frame["year"].replace("", None), errors="coerce")
        bad = year.isna() & frame["year"].notna() & (frame["year"].astype("str").str.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: row {row + 1}: year {frame['year'].iloc[row]!r} is not a number; fix or empty it")
    categories = [_categories(c) for c in frame["categories"]] if "categories" in frame.columns else [[]] * n
    text = frame["text"].fillna("").astype("str") if "text" in frame.columns else None
    return items_frame(
        list(ids), list(frame["title"].fillna("").astype("str")), year.round().astype("Int64").array, categories, text
    )


def _categories(cell: Any) -> list[str]:
    if isinstance(cell, list | tuple | np.ndarray):
        return [str(c) for c in cell if c is not None and str(c).strip()]
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return []
    return [c.strip() for c in str(cell).split("|") if c.strip()]
