"""Where the prepare SQL runs: a :class:`SqlRunner` holds named tables and runs the DuckDB-dialect text of
:mod:`recstack.data.prepare_sql` on them. :class:`DuckDbRunner` runs it as written (in process);
:class:`recstack.data.spark_engine.SparkRunner` translates it with sqlglot and runs it on Spark.

The one step that is not SQL is :meth:`SqlRunner.map_users`: the random split's keys, and the new_items split's keys
for its warm pairs (numpy's, read at each pair's stream position: :class:`recstack.data.random_stream.RandomStages`),
are computed by one Python function over whole users, wherever the rows are (a Spark worker, or this process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import duckdb
import pyarrow as pa


class SqlRunner(Protocol):
    """Named tables and DuckDB-dialect SQL over them (see the module docstring)."""

    def register(self, name: str, table: pa.Table) -> int:
        """Make an Arrow table available as ``name``; returns its row count."""

    def materialize(self, name: str, sql: str) -> int:
        """Compute ``sql`` once into table ``name`` (replacing it) and return its row count."""

    def view(self, name: str, sql: str) -> None:
        """Name ``sql`` as ``name`` without computing it (a step read once)."""

    def fetch(self, sql: str) -> pa.Table:
        """Run ``sql`` and return its rows here, in the query's order."""

    def map_users(self, name: str, sql: str, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema) -> int:
        """Table ``name`` (of ``schema``): ``fn`` applied to the rows of ``sql`` (with columns ``u``, ``i``), in
        parts that each hold whole users sorted by (u, i); returns its row count."""

    def drop(self, name: str) -> None:
        """Forget table ``name`` (frees what it holds)."""


class DuckDbRunner:
    """:class:`SqlRunner` on an in-process DuckDB connection (the SQL text as written)."""

    def __init__(self, con: duckdb.DuckDBPyConnection | None = None) -> None:
        self.con = con if con is not None else duckdb.connect()
        self._views: set[str] = set()

    def register(self, name: str, table: pa.Table) -> int:
        self.con.register(f"{name}__arrow", table)
        try:
            self.drop(name)
            self.con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {name}__arrow")
        finally:
            self.con.unregister(f"{name}__arrow")
        return table.num_rows

    def view(self, name: str, sql: str) -> None:
        self.drop(name)
        self.con.execute(f"CREATE TEMP VIEW {name} AS {sql}")
        self._views.add(name)

    def materialize(self, name: str, sql: str) -> int:
        self.drop(name)
        self.con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
        return int(self.con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0])

    def fetch(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()

    def map_users(self, name: str, sql: str, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema) -> int:
        return self.register(name, fn(self.fetch(f"SELECT * FROM ({sql}) AS rows ORDER BY u, i")).cast(schema))

    def drop(self, name: str) -> None:
        kind = "VIEW" if name in self._views else "TABLE"
        self._views.discard(name)
        self.con.execute(f"DROP {kind} IF EXISTS {name}")

    def close(self) -> None:
        self.con.close()
