"""The monitoring joins on Spark (``recstack-monitor engine=spark``): attribution and the outcome pairs from the same
SQL text as DuckDB, run by PySpark.

What runs where:

* DuckDB loads the lake (recstack.monitoring.lake_tables: dedup, hashing, event time), as for ``engine=duckdb``; the
  rows the joins read (recstack.monitoring.attribution.JOIN_INPUTS: ``imp_rows``, ``ev_rows``, with their row
  numbers) are handed to Spark as Arrow, only the columns and the event types the query needs.
* Spark runs :func:`~recstack.monitoring.attribution.attribution_queries` and
  :func:`~recstack.monitoring.attribution.outcome_pairs_query`, translated by sqlglot
  (:func:`recstack.data.spark_engine.to_spark_sql`): the joins, the expensive part at scale.
* ``attributed`` comes back into the DuckDB connection and the pairs as Arrow, each ordered (by ``ev_row``; by
  ``imp_row, pos``) so a run gives the same tables every time (the per-impression reductions do not depend on it).
  Everything after (recstack.monitoring.per_impression, the metrics, drift, A/B, outputs) stays where it was.

The one difference in the inputs: the ids and items are DuckDB's 64-bit hashes (UBIGINT), which Spark has no type for;
they travel shifted into BIGINT (``x - 2^63``), which keeps equality and order (the attribution's tie-break orders by
``rid``). No hash comes back: the results hold row numbers, positions and event types only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from recstack.data.spark_engine import SparkRunner
from recstack.monitoring.attribution import attribution_queries, input_views, outcome_pairs_query, sql_strings
from recstack.monitoring.spec import MetricSpec

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import SparkSession

__all__ = ["ATTRIBUTED_SCHEMA", "PAIRS_SCHEMA", "spark_attribute", "spark_outcome_pairs"]

ATTRIBUTED_SCHEMA = pa.schema(
    [
        pa.field("ev_row", pa.int64()),
        pa.field("imp_row", pa.int64()),
        pa.field("pos", pa.int32()),
        pa.field("event_type", pa.string()),
        pa.field("by_request", pa.bool_()),
    ]
)
PAIRS_SCHEMA = pa.schema([pa.field("imp_row", pa.int64()), pa.field("pos", pa.int32())])
_HASHED = ("rid", "uid", "item")


def _signed(column: str) -> str:
    """A UBIGINT hash as the BIGINT ``x - 2^63``: one-to-one and order-preserving."""
    return f"(({column})::HUGEINT - 9223372036854775808)::BIGINT"


def _select(column: str) -> str:
    if column in _HASHED:
        return f"{_signed(column)} AS {column}"
    if column == "items":
        return f"list_transform(items, lambda x: {_signed('x')}) AS items"
    return column


def _ship(
    runner: SparkRunner, con: duckdb.DuckDBPyConnection, name: str, columns: tuple[str, ...], where: str = ""
) -> int:
    """Register DuckDB's ``name`` (a join input view) in Spark under the same name, with ``columns`` only."""
    sql = f"SELECT {', '.join(_select(c) for c in columns)} FROM {name}" + (f" WHERE {where}" if where else "")
    return runner.register(name, con.sql(sql).to_arrow_table())


def spark_attribute(spark: SparkSession, con: duckdb.DuckDBPyConnection, spec: MetricSpec) -> int:
    """What :func:`~recstack.monitoring.attribution.attribute` does for the loaded connection ``con``, computed by
    ``spark``: creates ``attributed`` in ``con`` (ordered by ``ev_row``) and returns its rows. The views it creates in
    Spark are dropped afterwards; the session is the caller's."""
    input_views(con)
    *steps, (last, final) = attribution_queries(spec)
    runner = SparkRunner(spark)
    try:
        _ship(runner, con, "imp_rows", ("imp_row", "rid", "uid", "ts", "items"))
        types = sql_strings(spec.attributed_events)
        _ship(runner, con, "ev_rows", ("ev_row", "uid", "item", "event_type", "rid", "ts"), f"event_type IN ({types})")
        for name, sql in steps:  # kept, as DuckDB keeps them: cand and by_request are each read twice
            runner.materialize(name, sql)
        runner.view(last, final)
        attributed = runner.fetch(f"SELECT ev_row, imp_row, pos, event_type, by_request FROM {last} ORDER BY ev_row")
    finally:
        spark.catalog.dropTempView(last)
        runner.close()
    # the types of DuckDB's table, whatever Spark's Arrow conversion chose (string sizes, nullability)
    con.register("_spark_attributed", attributed.cast(ATTRIBUTED_SCHEMA))
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE attributed AS SELECT * FROM _spark_attributed")
    finally:
        con.unregister("_spark_attributed")
    return attributed.num_rows


def spark_outcome_pairs(spark: SparkSession, con: duckdb.DuckDBPyConnection, spec: MetricSpec) -> pa.Table:
    """What :func:`~recstack.monitoring.attribution.outcome_pairs` gives for the loaded connection ``con`` (``imp_row,
    pos``), computed by ``spark`` and ordered by ``imp_row, pos``, for the per-impression step
    (:func:`~recstack.monitoring.per_impression.load_impressions`'s ``pairs``). The session is the caller's."""
    input_views(con)
    runner = SparkRunner(spark)
    try:
        _ship(runner, con, "imp_rows", ("imp_row", "uid", "ts", "items"))
        types = sql_strings(spec.outcome_events)
        _ship(runner, con, "ev_rows", ("uid", "item", "event_type", "ts"), f"event_type IN ({types})")
        runner.view("outcome_pairs", outcome_pairs_query(spec))
        pairs = runner.fetch("SELECT imp_row, pos FROM outcome_pairs ORDER BY imp_row, pos")
    finally:
        spark.catalog.dropTempView("outcome_pairs")
        runner.close()
    return pairs.cast(PAIRS_SCHEMA)
