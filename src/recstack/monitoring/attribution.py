"""Which served list an event came from, and what a user went on to do after one: SQL over the ``imp`` and ``ev``
tables of :mod:`recstack.monitoring.lake_tables`, one text per query for both engines (DuckDB runs it as written,
Spark translated by sqlglot: recstack.monitoring.monitor_spark).

**Attribution** (clicks and conversions, :attr:`MetricSpec.attributed_events`), one impression per event at most:

1. an event carrying a ``request_id`` belongs to the impression of that id when it was served to the same user and
   not after the event (an id of another user's list, or of a list served later, is not trusted);
2. any other event (no id, or an id rule 1 refused) belongs to the latest impression that showed its item to its
   user within ``attribution_window_ms`` before the event;
3. an event earlier than the impression (a client clock behind the server's) is never attributed to it, by either
   rule: event time is the lake's one rule (client clock when plausible, else receive time) and must be >= the serve
   time.

``attributed(ev_row, imp_row, pos, event_type, by_request)`` (rows of ``ev`` and ``imp``): ``pos`` is the item's
1-based position in the list (NULL when a request_id event names an item the list did not show: it still counts as a
conversion of that list, never as a click on it).

**Outcome** (online MAP / NDCG): an impression's relevant set is the distinct items its user interacted with
(:attr:`MetricSpec.outcome_events`) from its serve time to ``outcome_window_ms`` after, whether or not the list showed
them (:func:`outcome_pairs`). Impressions with no later interaction have no pair (they cannot be judged).

Both joins pair an event with impressions of the same user in the same or the previous window-sized time bucket (an
equality join), then check the exact times: a plain range join would compare each event with every impression of
its user.

The joins read ``imp_rows`` and ``ev_rows`` (:data:`JOIN_INPUTS`): ``imp`` and ``ev`` with their row numbers as
columns (``imp_row``, ``ev_row``: DuckDB's ``rowid``, which recstack.monitoring.per_impression reads back) and only
the columns the joins need. DuckDB reads them as views (no copy of ``imp``); Spark gets the same rows as Arrow. So the
texts use no DuckDB-only names: ``array_position`` (DuckDB's ``list_position``; NULL there and 0 on Spark when the
item is missing, hence ``nullif`` / ``coalesce``), ``array_contains``, ``ANTI JOIN`` and ``QUALIFY`` (sqlglot writes
a subquery for Spark), ``//`` (Spark's ``DIV``).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from recstack.monitoring.spec import MetricSpec


def sql_strings(values: tuple[str, ...]) -> str:
    """``'a', 'b'``: event types as SQL string literals (for ``IN (...)``)."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


# What the joins read, by the names their SQL uses (module docstring): DuckDB's queries over the loaded tables.
JOIN_INPUTS: dict[str, str] = {
    "imp_rows": "SELECT rowid AS imp_row, rid, uid, ts, items FROM imp",
    "ev_rows": "SELECT rowid AS ev_row, uid, item, event_type, rid, ts FROM ev",
}
_INTERMEDIATE = ("cand", "by_request", "by_window")


def input_views(con: duckdb.DuckDBPyConnection) -> None:
    """The join inputs as DuckDB views over ``imp`` and ``ev`` (read at query time: nothing is copied)."""
    for name, sql in JOIN_INPUTS.items():
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")


def attribution_queries(spec: MetricSpec) -> list[tuple[str, str]]:
    """``(table, query)`` in the order they run (DuckDB's dialect, over :data:`JOIN_INPUTS`); each reads the tables
    before it, and the last makes ``attributed`` (module docstring)."""
    window = int(spec.attribution_window_ms)
    return [
        (
            "cand",
            "SELECT ev_row, uid, item, event_type, rid, ts FROM ev_rows "
            f"WHERE event_type IN ({sql_strings(spec.attributed_events)})",
        ),
        (
            "by_request",
            """SELECT c.ev_row, i.imp_row, nullif(array_position(i.items, c.item), 0)::INTEGER AS pos, c.event_type
            FROM cand c JOIN imp_rows i ON c.rid = i.rid AND c.uid = i.uid AND c.ts >= i.ts""",
        ),
        (
            "by_window",
            f"""WITH rest AS (SELECT * FROM cand c ANTI JOIN by_request b ON c.ev_row = b.ev_row),
            keyed AS (
                SELECT ev_row, uid, item, event_type, ts, ts // {window} AS b FROM rest
                UNION ALL
                SELECT ev_row, uid, item, event_type, ts, ts // {window} - 1 AS b FROM rest
            )
            SELECT k.ev_row, i.imp_row, array_position(i.items, k.item)::INTEGER AS pos, k.event_type
            FROM keyed k JOIN imp_rows i ON k.uid = i.uid AND k.b = i.ts // {window}
            WHERE k.ts >= i.ts AND k.ts < i.ts + {window} AND array_contains(i.items, k.item)
            QUALIFY row_number() OVER (PARTITION BY k.ev_row ORDER BY i.ts DESC, i.rid DESC) = 1""",
        ),
        (
            "attributed",
            """SELECT ev_row, imp_row, pos, event_type, true AS by_request FROM by_request
            UNION ALL
            SELECT ev_row, imp_row, pos, event_type, false AS by_request FROM by_window""",
        ),
    ]


def attribute(con: duckdb.DuckDBPyConnection, spec: MetricSpec) -> int:
    """Create ``attributed`` (module docstring); returns the number of attributed events."""
    input_views(con)
    for name, sql in attribution_queries(spec):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
    for name in _INTERMEDIATE:
        con.execute(f"DROP TABLE {name}")
    return con.execute("SELECT count(*) FROM attributed").fetchall()[0][0]


def outcome_pairs_query(spec: MetricSpec) -> str:
    """The query of :func:`outcome_pairs` (DuckDB's dialect, over :data:`JOIN_INPUTS`).

    An item counts once per impression: an interaction is paired with an impression only when it is the user's
    first with that item inside the impression's window (the previous one, ``prev_ts``, came before the impression),
    so no DISTINCT over the pairs is needed."""
    window = int(spec.outcome_window_ms)
    return f"""
        WITH later AS (
            SELECT uid, item, ts, lag(ts) OVER (PARTITION BY uid, item ORDER BY ts) AS prev_ts
            FROM ev_rows WHERE event_type IN ({sql_strings(spec.outcome_events)})
        ),
        keyed AS (
            SELECT uid, item, ts, prev_ts, ts // {window} AS b FROM later
            UNION ALL
            SELECT uid, item, ts, prev_ts, ts // {window} - 1 AS b FROM later
        )
        SELECT i.imp_row, coalesce(array_position(i.items, k.item), 0)::INTEGER AS pos
        FROM imp_rows i JOIN keyed k ON i.uid = k.uid AND i.ts // {window} = k.b
        WHERE k.ts >= i.ts AND k.ts < i.ts + {window} AND (k.prev_ts IS NULL OR k.prev_ts < i.ts)
    """


def outcome_pairs(con: duckdb.DuckDBPyConnection, spec: MetricSpec) -> pa.Table:
    """``(imp_row, pos)``: one row per impression and distinct item its user interacted with in the outcome window
    after it (``pos``: the item's 1-based position in the list, 0 when the list did not show it), computed by DuckDB
    (:func:`outcome_pairs_query`). The per-impression counts are taken in numpy (recstack.monitoring.per_impression): a
    hash aggregation over millions of impressions costs more than the join."""
    input_views(con)
    return con.sql(outcome_pairs_query(spec)).to_arrow_table()
