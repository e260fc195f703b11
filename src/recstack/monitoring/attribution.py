"""Which served list an event came from, and what a user went on to do after one: DuckDB SQL over the ``imp`` and
``ev`` tables of :mod:`recstack.monitoring.lake_tables`.

**Attribution** (clicks and conversions, :attr:`MetricSpec.attributed_events`), one impression per event at most:

1. an event carrying a ``request_id`` belongs to the impression of that id when it was served to the same user and
   not after the event (an id of another user's list, or of a list served later, is not trusted);
2. any other event (no id, or an id rule 1 refused) belongs to the latest impression that showed its item to its
   user within ``attribution_window_ms`` before the event;
3. an event earlier than the impression (a client clock behind the server's) is never attributed to it, by either
   rule: event time is the lake's one rule (client clock when plausible, else receive time) and must be >= the serve
   time.

``attributed(ev_row, imp_row, pos, event_type, by_request)`` (rows of ``ev`` and ``imp``): ``pos`` is the item's 1-based position in the list (NULL when a
request_id event names an item the list did not show: it still counts as a conversion of that list, never as a click
on it).

**Outcome** (online MAP / NDCG): an impression's relevant set is the distinct items its user interacted with
(:attr:`MetricSpec.outcome_events`) from its serve time to ``outcome_window_ms`` after, whether or not the list showed
them (:func:`outcome_pairs`). Impressions with no later interaction have no pair (they cannot be judged).

Both joins pair an event with impressions of the same user in the same or the previous window-sized time bucket (an
equality join), then check the exact times: a plain range join would compare each event with every impression of
its user.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from recstack.monitoring.spec import MetricSpec


def sql_strings(values: tuple[str, ...]) -> str:
    """``'a', 'b'``: event types as SQL string literals (for ``IN (...)``)."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def attribute(con: duckdb.DuckDBPyConnection, spec: MetricSpec) -> int:
    """Create ``attributed`` (module docstring); returns the number of attributed events."""
    window = int(spec.attribution_window_ms)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE cand AS
        SELECT rowid AS ev_row, uid, item, event_type, rid, ts
        FROM ev WHERE event_type IN ({sql_strings(spec.attributed_events)})
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE by_request AS
        SELECT c.ev_row, i.rowid AS imp_row, list_position(i.items, c.item) AS pos, c.event_type
        FROM cand c JOIN imp i ON c.rid = i.rid AND c.uid = i.uid AND c.ts >= i.ts
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE by_window AS
        WITH rest AS (SELECT * FROM cand c ANTI JOIN by_request b ON c.ev_row = b.ev_row),
        keyed AS (
            SELECT ev_row, uid, item, event_type, ts, ts // {window} AS b FROM rest
            UNION ALL
            SELECT ev_row, uid, item, event_type, ts, ts // {window} - 1 AS b FROM rest
        )
        SELECT k.ev_row, i.rowid AS imp_row, list_position(i.items, k.item) AS pos, k.event_type
        FROM keyed k JOIN imp i ON k.uid = i.uid AND k.b = i.ts // {window}
        WHERE k.ts >= i.ts AND k.ts < i.ts + {window} AND list_contains(i.items, k.item)
        QUALIFY row_number() OVER (PARTITION BY k.ev_row ORDER BY i.ts DESC, i.rid DESC) = 1
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE attributed AS
        SELECT ev_row, imp_row, pos, event_type, true AS by_request FROM by_request
        UNION ALL
        SELECT ev_row, imp_row, pos, event_type, false AS by_request FROM by_window
    """)
    for name in ("cand", "by_request", "by_window"):
        con.execute(f"DROP TABLE {name}")
    return con.execute("SELECT count(*) FROM attributed").fetchall()[0][0]


def outcome_pairs(con: duckdb.DuckDBPyConnection, spec: MetricSpec) -> pa.Table:
    """``(imp_row, pos)``: one row per impression and distinct item its user interacted with in the outcome window
    after it (``pos``: the item's 1-based position in the list, 0 when the list did not show it).

    An item counts once per impression: an interaction is paired with an impression only when it is the user's
    first with that item inside the impression's window (the previous one, ``prev_ts``, came before the impression),
    so no DISTINCT over the pairs is needed. The per-impression counts are taken in numpy
    (recstack.monitoring.per_impression): a hash aggregation over millions of impressions costs more than the join."""
    window = int(spec.outcome_window_ms)
    return con.sql(f"""
        WITH later AS (
            SELECT uid, item, ts, lag(ts) OVER (PARTITION BY uid, item ORDER BY ts) AS prev_ts
            FROM ev WHERE event_type IN ({sql_strings(spec.outcome_events)})
        ),
        keyed AS (
            SELECT uid, item, ts, prev_ts, ts // {window} AS b FROM later
            UNION ALL
            SELECT uid, item, ts, prev_ts, ts // {window} - 1 AS b FROM later
        )
        SELECT i.rowid AS imp_row, coalesce(list_position(i.items, k.item), 0)::INTEGER AS pos
        FROM imp i JOIN keyed k ON i.uid = k.uid AND i.ts // {window} = k.b
        WHERE k.ts >= i.ts AND k.ts < i.ts + {window} AND (k.prev_ts IS NULL OR k.prev_ts < i.ts)
    """).to_arrow_table()
