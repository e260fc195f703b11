"""SQL over a prepared split: DuckDB views on its Parquet files, and summary statistics computed in SQL.

Views: ``train``, ``valid``, ``test``, ``items``, ``users`` (one per file) and ``interactions`` (the three stages
with a ``stage`` column). The files are read in place; nothing is copied into the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from recstack.data.prepared import MANIFEST

VIEWS: tuple[str, ...] = ("train", "valid", "test", "items", "users")
QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9, 0.99)


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def connect(split_root: str | Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views of the module docstring over ``split_root``'s Parquet files."""
    root = Path(split_root)
    missing = [v for v in VIEWS if not (root / f"{v}.parquet").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{root} is not a prepared split (missing {[m + '.parquet' for m in missing]}); "
            "run `recstack-data prepare data=<name>` first"
        )
    con = duckdb.connect(database)
    for view in VIEWS:
        con.execute(
            f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet({_literal(root / f'{view}.parquet')})"
        )
    con.execute(
        "CREATE OR REPLACE VIEW interactions AS "
        "SELECT *, 'train' AS stage FROM train UNION ALL "
        "SELECT *, 'valid' AS stage FROM valid UNION ALL "
        "SELECT *, 'test' AS stage FROM test"
    )
    return con


@dataclass(frozen=True)
class Quantiles:
    """Interactions per user (or per item), over all stages: linear-interpolated quantiles and the maximum."""

    p10: float
    p50: float
    p90: float
    p99: float
    max: int


@dataclass(frozen=True)
class DataStats:
    """Summary of a prepared split (see :func:`stats`)."""

    root: str
    n_users: int
    n_items: int
    n_train: int
    n_valid: int
    n_test: int
    n_pairs: int  # distinct (user, item) over all stages
    sparsity: float  # 1 - n_pairs / (n_users * n_items)
    per_user: Quantiles
    per_item: Quantiles
    first_timestamp: int | None
    last_timestamp: int | None

    @property
    def n_interactions(self) -> int:
        return self.n_train + self.n_valid + self.n_test


def _quantiles(con: duckdb.DuckDBPyConnection, key: str, table: str) -> Quantiles:
    # LEFT JOIN from the id map, so an entity without interactions counts as 0 rather than vanishing.
    row = con.execute(
        f"""
        WITH c AS (
            SELECT t.{key}, count(i.{key}) AS n
            FROM {table} t LEFT JOIN interactions i ON i.{key} = t.{key}
            GROUP BY t.{key}
        )
        SELECT quantile_cont(n, {list(QUANTILES)}), max(n) FROM c
        """
    ).fetchone()
    qs, top = row
    if qs is None:
        return Quantiles(0.0, 0.0, 0.0, 0.0, 0)
    return Quantiles(*(float(q) for q in qs), max=int(top))


def stats(split_root: str | Path) -> DataStats:
    """Counts, sparsity, per-user/per-item interaction quantiles and the time range, all computed in DuckDB."""
    with connect(split_root) as con:
        n_users, n_items = con.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items)").fetchone()
        n_train, n_valid, n_test = con.execute(
            "SELECT (SELECT count(*) FROM train), (SELECT count(*) FROM valid), (SELECT count(*) FROM test)"
        ).fetchone()
        n_pairs, first_ts, last_ts = con.execute(
            "SELECT count(DISTINCT (user_idx, item_idx)), min(timestamp), max(timestamp) FROM interactions"
        ).fetchone()
        cells = n_users * n_items
        return DataStats(
            root=str(split_root),
            n_users=int(n_users),
            n_items=int(n_items),
            n_train=int(n_train),
            n_valid=int(n_valid),
            n_test=int(n_test),
            n_pairs=int(n_pairs),
            sparsity=1.0 - n_pairs / cells if cells else 1.0,
            per_user=_quantiles(con, "user_idx", "users"),
            per_item=_quantiles(con, "item_idx", "items"),
            first_timestamp=None if first_ts is None else int(first_ts),
            last_timestamp=None if last_ts is None else int(last_ts),
        )


def _when(ts: int | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_stats(s: DataStats) -> str:
    """A readable multi-line report of :class:`DataStats`."""
    total = s.n_interactions or 1

    def q(x: Quantiles) -> str:
        return f"p10 {x.p10:,.1f}  p50 {x.p50:,.1f}  p90 {x.p90:,.1f}  p99 {x.p99:,.1f}  max {x.max:,}"

    name = Path(s.root)
    manifest = name / MANIFEST
    title = f"{name.parent.name}/{name.name}" if manifest.is_file() else str(name)
    lines = [
        f"prepared split {title}",
        f"  users          {s.n_users:>12,}",
        f"  items          {s.n_items:>12,}",
        f"  interactions   {s.n_interactions:>12,}  ({s.n_pairs:,} distinct user-item pairs)",
        f"    train        {s.n_train:>12,}  {s.n_train / total:6.1%}",
        f"    valid        {s.n_valid:>12,}  {s.n_valid / total:6.1%}",
        f"    test         {s.n_test:>12,}  {s.n_test / total:6.1%}",
        f"  sparsity       {s.sparsity:>12.4%}",
        f"  per user       {q(s.per_user)}",
        f"  per item       {q(s.per_item)}",
        f"  time range     {_when(s.first_timestamp)} .. {_when(s.last_timestamp)}",
    ]
    return "\n".join(lines)
