"""User profiles on Spark (``recstack-profiles build engine=spark``): the profile build's own SQL, run by PySpark.

What runs where:

* DuckDB loads the lake (recstack.profiles.source: cleaning, aliases, event time, item categories, attributes,
  survey answers), as for ``engine=duckdb``; the tables the profiles read are handed to Spark as Arrow
  (:func:`register_inputs`).
* Spark runs the same SQL texts as DuckDB (:func:`recstack.profiles.build.profile_queries`: implicit category scores,
  sessions, then the profile rows), translated by sqlglot (:func:`recstack.data.spark_engine.to_spark_sql`), over all
  users in one query: Spark bounds its memory itself (the user-key ranges of recstack.profiles.partitions are
  DuckDB's).
* The profile table comes back as Arrow with :func:`~recstack.profiles.build.profile_schema`, and the implicit scores
  as DuckDB's ``profile_categories``, which the quality checks' imputation model reads: the checks (imputation,
  anomalies, duplicates) stay on DuckDB (recstack.profiles.quality).

The one difference between the texts: DuckDB's CTE hints (``AS [NOT] MATERIALIZED``), which Spark does not parse, are
dropped (:func:`without_cte_hints`); they change DuckDB's plan, not the rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from recstack.data.spark_engine import SparkRunner
from recstack.profiles.build import ATTRIBUTES_SQL, ProfileSpec, profile_queries, profile_schema
from recstack.profiles.source import ensure_user_keys

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["register_inputs", "spark_profiles", "without_cte_hints"]

CATEGORIES_SCHEMA = pa.schema(
    [pa.field("uid", pa.int32()), pa.field("category", pa.string()), pa.field("score", pa.float64())]
)


def _tables(con) -> set[str]:
    return {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def _inputs(con, as_of_ms: int) -> dict[str, str]:
    """DuckDB queries of what the profile SQL reads, by the table name it uses: the events up to ``as_of_ms`` (all
    the history loaded: ``first_seen_ms`` reads it) with the columns it reads, ENUM columns as text (Spark has no
    ENUM; the ENUMs order as their strings do, so ties break the same); the optional tables when loaded."""
    as_of = int(as_of_ms)
    tables = _tables(con)
    inputs = {
        "events": "SELECT uid, event_id, item_id, event_type::VARCHAR AS event_type, value, category, "
        f"device_class::VARCHAR AS device_class, local_hour, ts_ms, bucket FROM events WHERE ts_ms <= {as_of}",
        "user_keys": "SELECT uid, user_id FROM user_keys",
        "item_categories": "SELECT item_id, category FROM item_categories",
    }
    if "attributes" in tables:
        inputs["attributes"] = "SELECT user_id, age_band, gender, country, language FROM attributes"
    else:  # the latest demographics come from the profile events loaded (build._profiles_sql)
        inputs["event_profiles"] = (
            "SELECT uid, event_id, ts_ms, age_band, gender, country, language FROM event_profiles "
            f"WHERE ts_ms <= {as_of}"
        )
    if "survey_answers" in tables:
        inputs["survey_answers"] = "SELECT event_id, question_id, answer FROM survey_answers"
    return inputs


def register_inputs(runner: SparkRunner, con, as_of_ms: int) -> dict[str, int]:
    """Hand the tables of a DuckDB connection loaded by recstack.profiles.source to Spark as cached views of the same
    names; returns the rows of each. Gives attribute-only users their keys first (source.ensure_user_keys), as
    :func:`~recstack.profiles.build.build_profiles` does."""
    ensure_user_keys(con)
    return {name: runner.register(name, con.sql(sql).to_arrow_table()) for name, sql in _inputs(con, as_of_ms).items()}


def without_cte_hints(sql: str) -> str:
    """The DuckDB text without its CTE materialisation hints (``AS [NOT] MATERIALIZED``), still in DuckDB's dialect
    (the runner translates it): Spark's parser rejects them, and they choose DuckDB's plan, not the rows."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="duckdb")
    for cte in tree.find_all(exp.CTE):
        cte.set("materialized", None)
    return tree.sql(dialect="duckdb")


def spark_profiles(spark: SparkSession, con, as_of_ms: int, spec: ProfileSpec | None = None) -> pa.Table:
    """What :func:`~recstack.profiles.build.build_profiles` gives for the same loaded connection ``con`` (one row per
    user, ordered by ``user_id``, :func:`~recstack.profiles.build.profile_schema`), computed by ``spark``.

    Leaves ``profile_categories`` in ``con`` as build_profiles does (for the imputation model); not
    ``profile_sessions``: the segment rules then find their sessions themselves (and a previous build's are no longer
    offered to them). The views it creates in Spark are dropped afterwards; the session is the caller's."""
    spec = spec or ProfileSpec()
    runner = SparkRunner(spark)
    try:
        register_inputs(runner, con, as_of_ms)
        if "attributes" in _tables(con):
            runner.materialize("_profile_attributes", ATTRIBUTES_SQL)
        queries = profile_queries(con, as_of_ms, spec)
        runner.materialize("profile_categories", without_cte_hints(queries.categories))
        runner.materialize("profile_sessions", without_cte_hints(queries.sessions))
        profiles = runner.fetch(without_cte_hints(queries.profiles))
        categories = runner.fetch("SELECT uid, category, score FROM profile_categories ORDER BY uid, category")
    finally:
        runner.close()
    con.execute("DROP TABLE IF EXISTS profile_sessions_spec")  # shared_sessions: none from this build
    con.register("_spark_profile_categories", categories.cast(CATEGORIES_SCHEMA))
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE profile_categories AS SELECT * FROM _spark_profile_categories")
    finally:
        con.unregister("_spark_profile_categories")
    # the types of DuckDB's table, whatever Spark's Arrow conversion chose (string sizes, nullability, map names)
    return profiles.cast(profile_schema())
