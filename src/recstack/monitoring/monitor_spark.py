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

__all__ = ["ATTRIBUTED_SCHEMA", "PAIRS_SCHEMA", "spark_joins"]

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


IMP_COLUMNS = ("imp_row", "rid", "uid", "ts", "items")
EV_COLUMNS = ("ev_row", "uid", "item", "event_type", "rid", "ts")


def _ship_inputs(runner: SparkRunner, con: duckdb.DuckDBPyConnection, event_types: tuple[str, ...]) -> None:
    """``imp_rows`` and the ``ev_rows`` of ``event_types`` into Spark, once for the joins that read them."""
    input_views(con)
    _ship(runner, con, "imp_rows", IMP_COLUMNS)
    _ship(runner, con, "ev_rows", EV_COLUMNS, f"event_type IN ({sql_strings(tuple(dict.fromkeys(event_types)))})")


def _attribute_on(runner: SparkRunner, con: duckdb.DuckDBPyConnection, spec: MetricSpec) -> int:
    """The attribution queries over the inputs ``runner`` holds; ``attributed`` into ``con``, the intermediate tables
    dropped from Spark afterwards."""
    *steps, (last, final) = attribution_queries(spec)
    try:
        for name, sql in steps:  # kept, as DuckDB keeps them: cand and by_request are each read twice
            runner.materialize(name, sql)
        runner.view(last, final)
        attributed = runner.fetch(f"SELECT ev_row, imp_row, pos, event_type, by_request FROM {last} ORDER BY ev_row")
    finally:
        runner.spark.catalog.dropTempView(last)
        for name, _ in steps:
            runner.drop(name)
    # the types of DuckDB's table, whatever Spark's Arrow conversion chose (string sizes, nullability)
    con.register("_spark_attributed", attributed.cast(ATTRIBUTED_SCHEMA))
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE attributed AS SELECT * FROM _spark_attributed")
    finally:
        con.unregister("_spark_attributed")
    return attributed.num_rows


def _outcome_pairs_on(runner: SparkRunner, spec: MetricSpec) -> pa.Table:
    """The outcome-pairs query over the inputs ``runner`` holds, ordered by ``imp_row, pos``."""
    runner.view("outcome_pairs", outcome_pairs_query(spec))
    try:
        pairs = runner.fetch("SELECT imp_row, pos FROM outcome_pairs ORDER BY imp_row, pos")
    finally:
        runner.spark.catalog.dropTempView("outcome_pairs")
    return pairs.cast(PAIRS_SCHEMA)


def spark_joins(spark: SparkSession, con: duckdb.DuckDBPyConnection, spec: MetricSpec) -> tuple[int, pa.Table]:
    """Both joins for the loaded connection ``con`` over one shipment of the inputs (what ``recstack-monitor
    engine=spark`` runs: the impressions' lists are the bulk, and in local mode they are held in the driver's JVM):
    ``attributed`` into ``con`` (ordered by ``ev_row``) as :func:`~recstack.monitoring.attribution.attribute` makes
    it, and the outcome pairs of :func:`~recstack.monitoring.attribution.outcome_pairs` ordered by ``imp_row, pos``
    (the per-impression step's ``pairs``). Returns (attributed events, pairs). The session is the caller's."""
    runner = SparkRunner(spark)
    try:
        _ship_inputs(runner, con, (*spec.attributed_events, *spec.outcome_events))
        return _attribute_on(runner, con, spec), _outcome_pairs_on(runner, spec)
    finally:
        runner.close()
