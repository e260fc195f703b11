"""The prepare job as SQL text, written once in DuckDB's dialect; Spark runs the same text translated by sqlglot.

Every query mirrors one numpy step of the embedded path (:mod:`recstack.data.clean`, :mod:`recstack.data.split`,
:mod:`recstack.data.idmap`) and must give the same rows; ``tests/data/test_spark_engine.py`` runs the text on DuckDB
and on Spark against that path. The queries read and write these tables (internal column names avoid keywords):

* ``raw``: ``uid``, ``iid`` (text), ``ts`` (BIGINT), ``val`` (FLOAT), ``ev`` (text), ``src_row`` (source row number).
* ``user_codes`` / ``item_codes``: ``id``, ``code``: ids in the embedded order (numeric when every id is a decimal
  integer of up to 18 digits, else text; ties by first appearance), so codes sort like the final indices.
* ``cleaned`` (and the steps before it): ``u``, ``i``, ``ts``, ``val``, ``ev``, ``src_row``: interactions as codes,
  filtered step by step.
* ``pairs``: one row per (user, item): ``n_rows``, ``first_ts`` (earliest time), ``first_row`` (earliest source row).
* ``pair_stage``: ``u``, ``i``, ``stage`` (0 train, 1 valid, 2 test, -1 dropped).
* ``pair_keys`` (random split, and new_items over its warm pairs): ``u``, ``i``, ``offs``, ``rkey``, ``stage``,
  ``tied`` from :class:`~recstack.data.random_stream.RandomStages`, the one step in Python.
* new_items: ``cold_items`` (``i``: the held-out items, drawn in Python), ``warm_pairs`` / ``cold_pairs`` (``u``,
  ``i``), ``warm_stage`` (``u``, ``i``, ``stage``) and ``cold_order`` (``pos``, ``stage``: the stage of the cold pair
  at each position of the cold pairs' (user, item) order, from numpy's permutation in Python).

Numbers enter as text casts (``CAST('0.1' AS DOUBLE)``) so both engines parse the exact double Python holds.
"""

from __future__ import annotations

from collections.abc import Sequence

ROW_COLUMNS = "u, i, ts, val, ev, src_row"


def _double(x: float) -> str:
    """A double literal both engines parse to exactly ``x`` (repr round-trips; text parsing is correctly rounded)."""
    return f"CAST('{float(x)!r}' AS DOUBLE)"


def codes(column: str) -> str:
    """``id, code`` for the distinct values of ``raw.<column>`` (``uid`` or ``iid``), in the embedded index order."""
    return f"""
WITH ids AS (SELECT {column} AS id, min(src_row) AS first_row FROM raw GROUP BY {column}),
kind AS (
    SELECT coalesce(bool_and(length(id) BETWEEN 1 AND 18 AND NOT regexp_matches(id, '[^0-9]')), false) AS all_digits
    FROM ids
),
keyed AS (
    SELECT ids.id, ids.first_row,
           CASE WHEN kind.all_digits THEN TRY_CAST(ids.id AS BIGINT) END AS num_key,
           CASE WHEN kind.all_digits THEN NULL ELSE ids.id END AS text_key
    FROM ids CROSS JOIN kind
)
SELECT id, row_number() OVER (ORDER BY num_key, text_key, first_row) - 1 AS code FROM keyed
"""


ENCODE = """
SELECT uc.code AS u, ic.code AS i, r.ts, r.val, r.ev, r.src_row
FROM raw AS r JOIN user_codes AS uc ON r.uid = uc.id JOIN item_codes AS ic ON r.iid = ic.id
"""


def dedup(table: str) -> str:
    """Exact duplicate rows collapse to the earliest source row (as :func:`~recstack.data.clean.duplicate_mask`)."""
    return f"SELECT u, i, ts, val, ev, min(src_row) AS src_row FROM {table} GROUP BY u, i, ts, val, ev"


def threshold(table: str, value: float) -> str:
    """Rows with ``val >= value`` compared in float32 as numpy does; NaN is never kept (SQL sorts NaN above all)."""
    return f"SELECT {ROW_COLUMNS} FROM {table} WHERE NOT isnan(val) AND val >= CAST({_double(value)} AS FLOAT)"


def at_least(table: str, key: str, minimum: int) -> str:
    """Rows whose ``key`` (``u`` or ``i``) has at least ``minimum`` rows: one half-round of the k-core."""
    return (
        f"SELECT {ROW_COLUMNS} FROM (SELECT *, count(*) OVER (PARTITION BY {key}) AS n FROM {table}) AS counted "
        f"WHERE n >= {int(minimum)}"
    )


def pairs(table: str) -> str:
    return f"SELECT u, i, count(*) AS n_rows, min(ts) AS first_ts, min(src_row) AS first_row FROM {table} GROUP BY u, i"


def pair_shape(table: str) -> str:
    """``n_pairs``, ``max_per_user`` of the pairs in ``table`` (a subset of ``pairs``, whole users or not) and
    ``max_user``: the embedded index of its largest user, i.e. that user's rank among all users of ``pairs`` (the
    embedded path numbers the users left after cleaning 0..n-1 in code order)."""
    return f"""
SELECT sum(n) AS n_pairs, max(n) AS max_per_user,
       (SELECT count(DISTINCT u) FROM pairs WHERE u <= (SELECT max(u) FROM {table})) - 1 AS max_user
FROM (SELECT u, count(*) AS n FROM {table} GROUP BY u) AS per_user
"""


def pairs_with_starts(table: str) -> str:
    """Each pair of ``table`` with ``start``, the position of its user's first pair in ``table``'s (user, item)
    order: where numpy's key stream is read for it."""
    return f"""
WITH per_user AS (SELECT u, count(*) AS n FROM {table} GROUP BY u),
starts AS (
    SELECT u, sum(n) OVER (ORDER BY u ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) - n AS start FROM per_user
)
SELECT p.u, p.i, s.start FROM {table} AS p JOIN starts AS s ON p.u = s.u
"""


def pair_positions(table: str) -> str:
    """``u, i, pos``: each pair's position in ``table``'s (user, item) order, numbered without a global sort (a
    running sum over users, then a rank inside each user)."""
    return f"""
SELECT u, i, start + row_number() OVER (PARTITION BY u ORDER BY i) - 1 AS pos FROM ({pairs_with_starts(table)}) AS p
"""


def pairs_of_items(cold: bool) -> str:
    """The pairs whose item is in ``cold_items`` (``cold``) or not: the new_items split's two halves."""
    return f"""
SELECT p.u, p.i FROM pairs AS p LEFT JOIN cold_items AS c ON p.i = c.i WHERE c.i IS {"NOT " if cold else ""}NULL
"""


# Pairs whose key ties with another pair of the same user (flagged by RandomStages), in numpy's sorted order.
TIED_KEYS = "SELECT u, offs, rkey FROM pair_keys WHERE tied ORDER BY u, rkey, offs"

RANDOM_RANKS = """
SELECT k.u, k.i,
       row_number() OVER (PARTITION BY k.u ORDER BY k.rkey, coalesce(t.tiebreak, 0)) - 1 AS rnk,
       count(*) OVER (PARTITION BY k.u) AS n
FROM pair_keys AS k LEFT JOIN ties AS t ON k.u = t.u AND k.offs = t.offs
"""

CHRONO_RANKS = """
SELECT u, i, row_number() OVER (PARTITION BY u ORDER BY first_ts, first_row) - 1 AS rnk,
       count(*) OVER (PARTITION BY u) AS n
FROM pairs
"""


def by_ratio(ranked: str, ratios: Sequence[float]) -> str:
    """``u, i, stage`` from ``rnk``/``n`` with RecBole's counting (:func:`~recstack.data.split.ratio_counts`)."""
    total = sum(ratios)  # the same float operations, in the same order, as ratio_counts
    r1, r2 = (_double(r / total) for r in ratios[1:])
    return f"""
WITH scaled AS (
    SELECT u, i, rnk, n, {r1} * CAST(n AS DOUBLE) AS s1, {r2} * CAST(n AS DOUBLE) AS s2 FROM ({ranked}) AS ranked
),
counted AS (
    SELECT *, CAST(floor(s1) AS BIGINT) AS c1, CAST(floor(s2) AS BIGINT) AS c2 FROM scaled
),
test_bumped AS (
    SELECT u, i, rnk, s1, c1, n - c1 - c2 - CASE WHEN n - c1 - c2 > 1 AND s2 > 0 AND s2 < 1 THEN 1 ELSE 0 END AS c0
    FROM counted
),
valid_bumped AS (
    SELECT u, i, rnk,
           c0 - CASE WHEN c0 > 1 AND s1 > 0 AND s1 < 1 THEN 1 ELSE 0 END AS c0,
           c1 + CASE WHEN c0 > 1 AND s1 > 0 AND s1 < 1 THEN 1 ELSE 0 END AS c1
    FROM test_bumped
)
SELECT u, i, CASE WHEN rnk < c0 THEN 0 WHEN rnk < c0 + c1 THEN 1 ELSE 2 END AS stage FROM valid_bumped
"""


def leave_one_out(ranked: str) -> str:
    return f"""
SELECT u, i, CASE WHEN n >= 3 AND n - rnk = 2 THEN 1 WHEN n >= 3 AND n - rnk = 1 THEN 2 ELSE 0 END AS stage
FROM ({ranked}) AS ranked
"""


def kth_pair_time(k: int) -> str:
    """The ``k``-th smallest (0-based) pair time, counted over distinct times (no global sort of the pairs)."""
    return f"""
WITH times AS (SELECT first_ts, count(*) AS c FROM pairs GROUP BY first_ts),
running AS (
    SELECT first_ts, sum(c) OVER (ORDER BY first_ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto
    FROM times
)
SELECT min(first_ts) AS t FROM running WHERE upto > {int(k)}
"""


def time_cut(valid_at: float, test_at: float) -> str:
    """Stages by one global cut; users without a training pair are dropped (stage -1)."""
    return f"""
WITH staged AS (
    SELECT u, i, CASE WHEN first_ts >= {_double(test_at)} THEN 2 WHEN first_ts >= {_double(valid_at)} THEN 1
                      ELSE 0 END AS stage
    FROM pairs
),
trained AS (SELECT DISTINCT u FROM staged WHERE stage = 0)
SELECT s.u, s.i, CASE WHEN t.u IS NULL THEN -1 ELSE s.stage END AS stage
FROM staged AS s LEFT JOIN trained AS t ON s.u = t.u
"""


# The new_items split's pair_stage: the warm pairs' stages, the cold pairs' by their position (cold_order), and -1
# for every pair of a user without a warm pair (nothing to train on, as with the time split).
NEW_ITEMS_STAGES = f"""
WITH cold AS (
    SELECT c.u, c.i, o.stage FROM ({pair_positions("cold_pairs")}) AS c JOIN cold_order AS o ON c.pos = o.pos
),
warm_users AS (SELECT DISTINCT u FROM warm_stage)
SELECT u, i, CAST(stage AS INTEGER) AS stage FROM warm_stage
UNION ALL
SELECT c.u, c.i, CASE WHEN w.u IS NULL THEN -1 ELSE CAST(c.stage AS INTEGER) END AS stage
FROM cold AS c LEFT JOIN warm_users AS w ON c.u = w.u
"""


SPLIT_COUNTS = """
SELECT count(*) FILTER (WHERE s.stage >= 0) AS n_pairs,
       coalesce(sum(p.n_rows) FILTER (WHERE s.stage < 0), 0) AS dropped_rows,
       count(DISTINCT s.u) - count(DISTINCT CASE WHEN s.stage >= 0 THEN s.u END) AS dropped_users
FROM pair_stage AS s JOIN pairs AS p ON s.u = p.u AND s.i = p.i
"""


def final_codes(key: str, codes_table: str) -> str:
    """``code, id, idx`` of the users (``key`` ``u``) or items (``i``) left in some stage, renumbered 0..n-1 in code
    order (as :func:`~recstack.data.idmap.recompact` keeps the order)."""
    return f"""
SELECT k.{key} AS code, c.id, CAST(k.idx AS INTEGER) AS idx
FROM (SELECT {key}, row_number() OVER (ORDER BY {key}) - 1 AS idx
      FROM (SELECT DISTINCT {key} FROM pair_stage WHERE stage >= 0) AS kept) AS k
JOIN {codes_table} AS c ON c.code = k.{key}
"""


def _order_keys(chronological: bool) -> tuple[str, str]:
    """The join and the sort keys of the layout's row order (see :func:`final_rows`)."""
    if chronological:
        return "JOIN pairs AS p ON r.u = p.u AND r.i = p.i", "r.u, p.first_ts, p.first_row, r.src_row"
    return "", "r.u, r.i, r.src_row"


def final_rows(chronological: bool) -> str:
    """Every stage's rows (``stage`` column first, user and item codes) in the layout's order: by stage, then by user;
    inside a user by pair time (chronological splits) or by item; a pair's rows in source order."""
    pair_join, order = _order_keys(chronological)
    return f"""
SELECT CAST(s.stage AS TINYINT) AS stage, r.u, r.i, r.ts AS timestamp, r.val AS value, r.ev AS event_type
FROM cleaned AS r
JOIN pair_stage AS s ON r.u = s.u AND r.i = s.i
{pair_join}
WHERE s.stage >= 0
ORDER BY s.stage, {order}
"""


def final_rows_with_ids(chronological: bool) -> str:
    """:func:`final_rows` unsorted, with the final ids and indices (``final_users`` / ``final_items``) and the sort
    keys ``o1..o4``: for an engine that writes each stage itself (:data:`STAGE_ROWS`)."""
    pair_join, order = _order_keys(chronological)
    keys = ", ".join(f"{key} AS o{n}" for n, key in enumerate(([*order.split(", "), "r.src_row"])[:4], start=1))
    return f"""
SELECT s.stage, fu.id AS user_id, fi.id AS item_id, fu.idx AS user_idx, fi.idx AS item_idx, r.ts AS timestamp,
       r.val AS value, r.ev AS event_type, {keys}
FROM cleaned AS r
JOIN pair_stage AS s ON r.u = s.u AND r.i = s.i
{pair_join}
JOIN final_users AS fu ON fu.code = r.u
JOIN final_items AS fi ON fi.code = r.i
WHERE s.stage >= 0
"""


STAGE_ROWS = """
SELECT user_id, item_id, user_idx, item_idx, timestamp, value, event_type FROM final_all WHERE stage = {stage}
ORDER BY o1, o2, o3, o4
"""
STAGE_COUNTS = "SELECT stage, count(*) AS n FROM final_all GROUP BY stage"
