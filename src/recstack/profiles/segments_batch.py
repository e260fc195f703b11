"""``recstack-segments run``: segment membership materialised with DuckDB over the event lake, with its history.

One run evaluates every rule (recstack.profiles.compile) as of one time and writes, under ``<out>``:

* ``membership.parquet``: the members now, ``(segment, user_id, entered_ms)``; ``entered_ms`` carries over from the
  previous run for users who stayed;
* ``history/run-<as_of_ms>.parquet``: the spells that ended in this run, ``(segment, user_id, entered_ms, left_ms)``
  (one file per run, append-only);
* ``runs.parquet``: one row per segment and run: ``(segment, as_of_ms, size, entered, left, rule)`` (sizes over time);
* ``summary.json``: per segment, its rule, size, top items and categories of its members' recent events and its
  overlap with the other segments: what the dashboard and ``GET /segments`` show (:func:`publish` copies it to Redis).

Each file is written to a temporary name and renamed, so a reader never sees half a run.

``engine``: the membership itself is computed by DuckDB here (:func:`evaluate_membership`), or by Spark
(``engine=spark``, recstack.profiles.segments_spark) from the same SQL text; the lake is loaded, and the history and
summary are computed, by DuckDB either way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from recstack.profiles.build import shared_sessions
from recstack.profiles.compile import membership_sql, window_start_bucket
from recstack.profiles.partitions import in_range, user_ranges
from recstack.profiles.rules import DEFAULT_HORIZON_H, HOUR_MS, SESSION_GAP_MS, Segment
from recstack.profiles.source import ensure_user_keys, load_attributes, load_catalogue, load_events

if TYPE_CHECKING:
    from recstack.data.spark_engine import SparkEngine

TOP_ITEMS = 20
TOP_CATEGORIES = 10
TOP_WINDOW_H = 30 * 24  # top items/categories: the members' events of the last 30 days
SIZES_KEPT = 90  # runs of size history shown per segment
MEMBERSHIP_SCHEMA = pa.schema(
    [pa.field("segment", pa.string()), pa.field("user_id", pa.string()), pa.field("entered_ms", pa.int64())]
)
HISTORY_SCHEMA = pa.schema([*MEMBERSHIP_SCHEMA, pa.field("left_ms", pa.int64())])
RUNS_SCHEMA = pa.schema(
    [
        pa.field("segment", pa.string()),
        pa.field("as_of_ms", pa.int64()),
        pa.field("size", pa.int64()),
        pa.field("entered", pa.int64()),
        pa.field("left", pa.int64()),
        pa.field("rule", pa.string()),
    ]
)


@dataclass(frozen=True)
class SegmentRun:
    """What one run found: membership at ``as_of_ms`` and the per-segment summary."""

    as_of_ms: int
    membership: pa.Table  # MEMBERSHIP_SCHEMA
    left: pa.Table  # HISTORY_SCHEMA: spells that ended now
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: int = 0
    seconds: float = 0.0


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def connect(threads: int | None = None, memory_limit: str | None = None):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    return con


def load_inputs(
    con,
    lake: str | Path,
    items_path: str | Path | None,
    as_of_ms: int,
    horizon_h: int = DEFAULT_HORIZON_H,
    gap_ms: int = SESSION_GAP_MS,
    drop_bots: bool = True,
) -> int:
    """The tables the compiled SQL reads: events of the horizon (plus one session gap before it, so a session start at
    the horizon's edge sees the event before it), item/event categories, attributes. Returns the events loaded."""
    lo = window_start_bucket(as_of_ms, horizon_h) * HOUR_MS - gap_ms
    n = load_events(con, lake, lo, as_of_ms + 1, drop_bots=drop_bots)
    load_catalogue(con, items_path)
    load_attributes(con, lake, as_of_ms, drop_bots=drop_bots)
    return n


def with_user_ids(members: str) -> str:
    """The ``(segment, user_id)`` rows, ordered, of a query of ``(segment, uid)`` members: the keys joined back to
    their pseudonyms (``user_keys``). One text for both engines (recstack.profiles.segments_spark)."""
    return f"SELECT m.segment, k.user_id FROM ({members}) m JOIN user_keys k USING (uid) ORDER BY segment, user_id"


def evaluate_membership(
    con,
    segments: Mapping[str, Segment],
    as_of_ms: int,
    horizon_h: int = DEFAULT_HORIZON_H,
    gap_ms: int = SESSION_GAP_MS,
) -> pa.Table:
    """``(segment, user_id)`` of every member, ordered, over tables already loaded by :func:`load_inputs`; users are
    evaluated a range of keys at a time (recstack.profiles.partitions), which bounds the memory of their features."""
    ensure_user_keys(con)
    sessions = shared_sessions(con, as_of_ms, gap_ms, window_start_bucket(as_of_ms, horizon_h) * HOUR_MS - gap_ms)
    parts = []
    for keys in user_ranges(con):
        sql = membership_sql(segments, as_of_ms, horizon_h, gap_ms, in_range(keys), sessions)
        parts.append(con.sql(with_user_ids(sql)).to_arrow_table())
    if len(parts) == 1:
        return parts[0]
    return pa.concat_tables(parts).sort_by([("segment", "ascending"), ("user_id", "ascending")])


def dry_run_size(
    lake: str | Path,
    items_path: str | Path | None,
    segment: Segment,
    as_of_ms: int | None = None,
    horizon_h: int = DEFAULT_HORIZON_H,
) -> int:
    """How many users a rule would hold now, without saving anything (``POST /segments`` with ``dry_run``)."""
    as_of = int(time.time() * 1000) if as_of_ms is None else int(as_of_ms)
    con = connect()
    try:
        load_inputs(con, lake, items_path, as_of, horizon_h)
        return evaluate_membership(con, {segment.name: segment}, as_of, horizon_h).num_rows
    finally:
        con.close()


def _previous(out: Path) -> pa.Table:
    path = out / "membership.parquet"
    return pq.read_table(path, schema=MEMBERSHIP_SCHEMA) if path.is_file() else MEMBERSHIP_SCHEMA.empty_table()


def _carry_over(con, current: pa.Table, previous: pa.Table, as_of_ms: int) -> tuple[pa.Table, pa.Table]:
    """(membership with entered_ms, spells that ended)."""
    con.register("_now", current)
    con.register("_before", previous)
    try:
        members = con.sql(
            f"""SELECT n.segment, n.user_id, coalesce(b.entered_ms, {int(as_of_ms)})::BIGINT AS entered_ms
                FROM _now n LEFT JOIN _before b USING (segment, user_id) ORDER BY segment, user_id"""
        ).to_arrow_table()
        left = con.sql(
            f"""SELECT b.segment, b.user_id, b.entered_ms, {int(as_of_ms)}::BIGINT AS left_ms
                FROM _before b ANTI JOIN _now n USING (segment, user_id) ORDER BY segment, user_id"""
        ).to_arrow_table()
    finally:
        con.unregister("_now")
        con.unregister("_before")
    return members.cast(MEMBERSHIP_SCHEMA), left.cast(HISTORY_SCHEMA)


def _summary(con, segments: Mapping[str, Segment], members: pa.Table, as_of_ms: int) -> dict[str, dict[str, Any]]:
    """Top items and categories of each segment's members (their events of the last 30 days) and the overlaps."""
    con.register("_members", members)
    try:
        low = window_start_bucket(as_of_ms, TOP_WINDOW_H)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _member_keys AS "
            "SELECT m.segment, k.uid FROM _members m JOIN user_keys k USING (user_id)"
        )
        con.execute("CREATE OR REPLACE TEMP TABLE _segment_items (segment VARCHAR, item_id VARCHAR, n BIGINT)")
        con.execute("CREATE OR REPLACE TEMP TABLE _segment_categories (segment VARCHAR, category VARCHAR, n BIGINT)")
        # Per user first (events per item, per category), then per segment: a user in several segments is joined to
        # a few rows per item or category instead of to every event of theirs again. A range of users at a time
        # (recstack.profiles.partitions); the ranges' counts are then summed.
        for keys in user_ranges(con):
            mine = in_range(keys)
            window = f"bucket >= {low} AND ts_ms <= {int(as_of_ms)} AND {mine}"
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE _user_items AS SELECT uid, item_id, count(*) AS n FROM events
                    WHERE item_id IS NOT NULL AND {window} GROUP BY ALL"""
            )
            con.execute(
                f"""INSERT INTO _segment_items
                    SELECT segment, item_id, sum(n) FROM _member_keys m JOIN _user_items USING (uid)
                    WHERE {mine} GROUP BY segment, item_id"""
            )
            con.execute(  # an event's categories (recstack.profiles.source), counted per user
                f"""INSERT INTO _segment_categories
                    WITH user_categories AS (
                        SELECT uid, category, sum(n) AS n FROM (
                            SELECT u.uid, c.category, u.n FROM _user_items u JOIN item_categories c USING (item_id)
                            UNION ALL
                            SELECT uid, category, 1 AS n FROM events e WHERE category IS NOT NULL AND {window}
                                AND NOT EXISTS (SELECT 1 FROM item_categories c
                                                WHERE c.item_id = e.item_id AND c.category = e.category))
                        GROUP BY ALL)
                    SELECT segment, category, sum(n) FROM _member_keys m JOIN user_categories USING (uid)
                    WHERE {mine} GROUP BY segment, category"""
            )
        items = con.sql(
            f"""SELECT segment, item_id, sum(n) AS total FROM _segment_items GROUP BY segment, item_id
                QUALIFY row_number() OVER (PARTITION BY segment ORDER BY total DESC, item_id) <= {TOP_ITEMS}
                ORDER BY segment, total DESC, item_id"""
        ).fetchall()
        categories = con.sql(
            f"""SELECT segment, category, sum(n) AS total FROM _segment_categories GROUP BY segment, category
                QUALIFY row_number() OVER (PARTITION BY segment ORDER BY total DESC, category) <= {TOP_CATEGORIES}
                ORDER BY segment, total DESC, category"""
        ).fetchall()
        for table in ("_user_items", "_segment_items", "_segment_categories", "_member_keys"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        overlap = con.sql(
            """SELECT a.segment, b.segment, count(*) FROM _members a JOIN _members b USING (user_id)
               WHERE a.segment <> b.segment GROUP BY ALL"""
        ).fetchall()
        sizes = dict(con.sql("SELECT segment, count(*) FROM _members GROUP BY segment").fetchall())
    finally:
        con.unregister("_members")
    out: dict[str, dict[str, Any]] = {
        name: {
            "rule": segment.rule,
            "source": segment.source,
            "size": int(sizes.get(name, 0)),
            "last_run": iso(as_of_ms),
            "top_items": [],
            "top_categories": [],
            "overlap": {},
        }
        for name, segment in segments.items()
    }
    for segment, item, n in items:
        out[segment]["top_items"].append([item, int(n)])
    for segment, category, n in categories:
        out[segment]["top_categories"].append([category, int(n)])
    for a, b, n in overlap:
        out[a]["overlap"][b] = int(n)
    return out


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temp, compression="zstd")
    os.replace(temp, path)


def _runs(out: Path, segments: Mapping[str, Segment], run: SegmentRun, previous: pa.Table) -> pa.Table:
    path = out / "runs.parquet"
    old = pq.read_table(path, schema=RUNS_SCHEMA) if path.is_file() else RUNS_SCHEMA.empty_table()
    entered: dict[str, int] = {}
    for segment, entered_ms in zip(
        run.membership["segment"].to_pylist(), run.membership["entered_ms"].to_pylist(), strict=True
    ):
        if entered_ms == run.as_of_ms:
            entered[segment] = entered.get(segment, 0) + 1
    left: dict[str, int] = {}
    for segment in run.left["segment"].to_pylist():
        left[segment] = left.get(segment, 0) + 1
    rows = pa.table(
        {
            "segment": list(segments),
            "as_of_ms": [run.as_of_ms] * len(segments),
            "size": [run.summary[name]["size"] for name in segments],
            "entered": [entered.get(name, 0) for name in segments],
            "left": [left.get(name, 0) for name in segments],
            "rule": [json.dumps(s.rule, sort_keys=True) for s in segments.values()],
        },
        schema=RUNS_SCHEMA,
    )
    return pa.concat_tables([old, rows])


def run_segments(
    lake: str | Path,
    items_path: str | Path | None,
    segments: Mapping[str, Segment],
    out: str | Path,
    as_of_ms: int | None = None,
    horizon_h: int = DEFAULT_HORIZON_H,
    gap_ms: int = SESSION_GAP_MS,
    drop_bots: bool = True,
    threads: int | None = None,
    memory_limit: str | None = None,
    loaded=None,
    engine: SparkEngine | None = None,
) -> SegmentRun:
    """Evaluate every segment as of ``as_of_ms`` (now by default) and write the run's files under ``out``.

    ``loaded``: a DuckDB connection whose tables :func:`load_inputs` (or the profile build's load, a superset) has
    already loaded for this ``as_of_ms`` and ``drop_bots``, from at least the horizon's start minus ``gap_ms``; the run
    then reads them instead of loading the lake again, and leaves the connection open. Rules only count events inside
    their windows, so a longer history gives the same membership.

    ``engine``: a :class:`~recstack.data.spark_engine.SparkEngine` (``engine=spark``) computes the membership on
    Spark (recstack.profiles.segments_spark); the caller closes it. ``None``: DuckDB (the default)."""
    started = time.perf_counter()
    as_of = int(time.time() * 1000) if as_of_ms is None else int(as_of_ms)
    root = Path(out).expanduser()
    # The session starts before the lake is read: a missing Java or PySpark fails in a second, not after the load.
    spark = engine.spark if engine is not None else None
    con = loaded if loaded is not None else connect(threads, memory_limit)
    try:
        if loaded is None:
            n_events = load_inputs(con, lake, items_path, as_of, horizon_h, gap_ms, drop_bots)
        else:
            lo = window_start_bucket(as_of, horizon_h) * HOUR_MS - gap_ms
            n_events = int(con.execute(f"SELECT count(*) FROM events WHERE ts_ms >= {lo}").fetchall()[0][0])
        if spark is None:
            current = evaluate_membership(con, segments, as_of, horizon_h, gap_ms)
        else:
            from recstack.profiles.segments_spark import spark_membership

            current = spark_membership(spark, con, segments, as_of, horizon_h, gap_ms)
        previous = _previous(root)
        previous = previous.filter(pa.compute.is_in(previous["segment"], pa.array(list(segments), pa.string())))
        members, left = _carry_over(con, current, previous, as_of)
        summary = _summary(con, segments, members, as_of)
    finally:
        if loaded is None:
            con.close()
    run = SegmentRun(as_of, members, left, summary, n_events, 0.0)
    runs = _runs(root, segments, run, previous)
    for name in segments:
        mine = runs.filter(pa.compute.equal(runs["segment"], name))
        pairs = sorted(zip(mine["as_of_ms"].to_pylist(), mine["size"].to_pylist(), strict=True))[-SIZES_KEPT:]
        summary[name]["sizes"] = [[iso(ms), int(size)] for ms, size in pairs]
    _write(members, root / "membership.parquet")
    if left.num_rows:
        _write(left, root / "history" / f"run-{as_of}.parquet")
    _write(runs, root / "runs.parquet")
    temp = root / ".summary.json.tmp"
    temp.write_text(json.dumps({"as_of": iso(as_of), "segments": summary}, indent=1, sort_keys=True))
    os.replace(temp, root / "summary.json")
    return SegmentRun(as_of, members, left, summary, n_events, time.perf_counter() - started)
