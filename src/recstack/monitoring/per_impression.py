"""One row per impression, as numpy arrays: its series, day and user, what was attributed to it (clicks by position,
a conversion) and how its list ranks against what followed (the relevant set's size and the positions it holds).

DuckDB (or Spark, recstack.monitoring.monitor_spark) does the joins (recstack.monitoring.attribution); the
per-impression reductions here are bincounts and bit operations over dense row indices, which cost a fraction of a
SQL hash aggregation over millions of groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recstack.evaluation.metrics import map_, ndcg
from recstack.monitoring.attribution import outcome_pairs, sql_strings
from recstack.monitoring.spec import MetricSpec

RANKING = {"map": map_, "ndcg": ndcg}
_CHUNK = 1_000_000  # rows per metric batch: bounds the (rows x K) float64 intermediates


@dataclass(frozen=True)
class Impressions:
    """Aligned arrays, one entry per impression. ``series`` indexes :attr:`series_names` (``bundle, experiment,
    arm``); ``user`` is a dense code per distinct user (-1: no id); ``click_mask`` / ``hit_mask`` hold bit ``p - 1``
    for an attributed click / a relevant item at position ``p <= max_k``; ``n_relevant`` is 0 for an impression
    nothing followed (not judged)."""

    day: np.ndarray
    series: np.ndarray
    user: np.ndarray
    n_items: np.ndarray
    click_mask: np.ndarray
    converted: np.ndarray
    n_relevant: np.ndarray
    hit_mask: np.ndarray
    uid: np.ndarray  # the users' hashed ids (0 where there is none), to match a membership table
    series_names: pd.DataFrame

    def __len__(self) -> int:
        return int(self.day.size)


def _bits(positions: np.ndarray) -> np.ndarray:
    return np.left_shift(np.int64(1), positions.astype(np.int64) - 1)


def load_impressions(con: duckdb.DuckDBPyConnection, spec: MetricSpec, pairs: pa.Table | None = None) -> Impressions:
    """Read ``imp``, ``series``, ``attributed`` and the outcome pairs into :class:`Impressions`. ``pairs``: outcome
    pairs another engine computed (recstack.monitoring.monitor_spark); ``None``: DuckDB computes them here."""
    names = con.execute("SELECT gid, bundle, experiment, arm FROM series ORDER BY bundle, experiment, arm").df()
    codes = pa.table({"gid": pa.array(names["gid"].to_numpy(np.uint64)), "code": pa.array(np.arange(len(names)))})
    con.register("series_codes", codes)
    table = con.sql(
        "SELECT i.rowid AS row, i.day, c.code, i.uid, i.n_items FROM imp i JOIN series_codes c USING (gid)"
    ).to_arrow_table()
    con.unregister("series_codes")
    rows = table.column("row").to_numpy()
    index = np.full(int(rows.max()) + 1 if rows.size else 0, -1, dtype=np.int64)
    index[rows] = np.arange(rows.size)
    n = rows.size

    uid_column = table.column("uid")
    has_id = pc.is_valid(uid_column).to_numpy(zero_copy_only=False)
    uid = pc.fill_null(uid_column, 0).to_numpy().astype(np.uint64, copy=False)
    user = np.full(n, -1, dtype=np.int64)
    user[has_id] = pd.factorize(uid[has_id])[0]

    attributed = con.sql(f"""
        SELECT imp_row, coalesce(pos, 0)::INTEGER AS pos, event_type IN ({sql_strings(spec.click_events)}) AS click,
               event_type IN ({sql_strings(spec.conversion_events)}) AS conversion
        FROM attributed
    """).to_arrow_table()
    at_row = index[attributed.column("imp_row").to_numpy()]
    at_pos = attributed.column("pos").to_numpy()
    click = attributed.column("click").to_numpy(zero_copy_only=False) & (at_pos >= 1) & (at_pos <= spec.max_k)
    click_mask = np.zeros(n, dtype=np.int64)
    np.bitwise_or.at(click_mask, at_row[click], _bits(at_pos[click]))
    converted = np.zeros(n, dtype=bool)
    converted[at_row[attributed.column("conversion").to_numpy(zero_copy_only=False)]] = True

    if pairs is None:
        pairs = outcome_pairs(con, spec)
    pair_row = index[pairs.column("imp_row").to_numpy()]
    pair_pos = pairs.column("pos").to_numpy()
    n_relevant = np.bincount(pair_row, minlength=n).astype(np.int32)
    hit = (pair_pos >= 1) & (pair_pos <= spec.max_k)
    hit_mask = np.zeros(n, dtype=np.int64)
    np.bitwise_or.at(hit_mask, pair_row[hit], _bits(pair_pos[hit]))
    return Impressions(
        day=table.column("day").to_numpy(),
        series=table.column("code").to_numpy().astype(np.int32),
        user=user,
        n_items=table.column("n_items").to_numpy(),
        click_mask=click_mask,
        converted=converted,
        n_relevant=n_relevant,
        hit_mask=hit_mask,
        uid=uid,
        series_names=names[["bundle", "experiment", "arm"]].reset_index(drop=True),
    )


def value_name(name: str, k: int) -> str:
    return f"{name}@{k}"


def hits_matrix(hit_mask: np.ndarray, width: int) -> np.ndarray:
    """``(N, width)`` booleans: bit ``j`` of each mask is position ``j + 1``."""
    return ((np.asarray(hit_mask, dtype=np.int64)[:, None] >> np.arange(width, dtype=np.int64)) & 1).astype(bool)


def ranking_values(hit_mask: np.ndarray, n_relevant: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """``map@k`` and ``ndcg@k`` per impression through recstack.evaluation.metrics, the offline evaluator's own
    functions (every row needs ``n_relevant >= 1``). Lists without a hit score 0 and are not computed."""
    n = hit_mask.size
    out = {value_name(name, k): np.zeros(n) for k in ks for name in RANKING}
    with_hit = np.flatnonzero(hit_mask != 0)
    for start in range(0, with_hit.size, _CHUNK):
        chunk = with_hit[start : start + _CHUNK]
        hits = hits_matrix(hit_mask[chunk], max(ks))
        for k in ks:
            for name, fn in RANKING.items():
                out[value_name(name, k)][chunk] = fn(hits, n_relevant[chunk], k)
    return out


def judged_values(imps: Impressions, ks: tuple[int, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The indices of the judged impressions (something followed them) and their ranking values."""
    judged = np.flatnonzero(imps.n_relevant > 0)
    return judged, ranking_values(imps.hit_mask[judged], imps.n_relevant[judged], ks)
