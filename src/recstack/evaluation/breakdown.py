"""Who a model serves well: per-user metrics grouped by training activity and by each demographic column.

Each segmentation is a label per evaluated user (a numpy array of strings, in the order of
:attr:`~recstack.evaluation.evaluator.PerUserResults.users`); :func:`segment_means` averages any per-user metric
within each label. Curves over K and popularity figures for the report are computed here too, from the per-user
hits and lists the evaluator keeps, so the report module only lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import PerUserResults
from recstack.evaluation.metrics import RANKING_METRICS

# Training interactions per user: (upper bound exclusive, label). Matches the issue's < 10, 10-50, > 50.
ACTIVITY_BUCKETS: tuple[tuple[float, str], ...] = ((10, "<10"), (51, "10-50"), (np.inf, ">50"))
AGE_BINS: tuple[float, ...] = (0, 18, 25, 35, 45, 56, np.inf)
AGE_LABELS: tuple[str, ...] = ("<18", "18-24", "25-34", "35-44", "45-55", "56+")
# Identifier-like columns say nothing about a group of users.
_SKIP_COLUMNS = ("user_idx", "user_id")
_SKIP_SUBSTRINGS = ("zip", "postal", "_id", "name", "email")
MAX_CATEGORIES = 25


@dataclass(frozen=True)
class Segmentation:
    """A way of grouping users: its name (e.g. ``activity``, ``gender``), one label per user, labels in display order."""

    name: str
    labels: np.ndarray
    order: tuple[str, ...]


def activity_segmentation(split: PreparedSplit, users: np.ndarray) -> Segmentation:
    """Users bucketed by their number of distinct training items: <10, 10-50, >50."""
    counts = np.diff(split.matrix("train").indptr)[users]
    labels = np.empty(len(users), dtype=object)
    lower = -np.inf
    for upper, label in ACTIVITY_BUCKETS:
        labels[(counts >= lower) & (counts < upper)] = label
        lower = upper
    return Segmentation("training interactions", labels.astype(str), tuple(label for _, label in ACTIVITY_BUCKETS))


def demographic_segmentations(split: PreparedSplit, users: np.ndarray) -> list[Segmentation]:
    """One segmentation per demographic column of ``split.users``.

    Numeric-looking columns are bucketed (age into the usual ranges, anything else into quartiles); categorical
    columns are used as they are when they have at most 25 values; identifier-like columns (ids, zip codes, names) and
    columns with more categories are skipped. Missing values become ``"unknown"``."""
    table = split.users
    if table is None or table.empty or "user_idx" not in table.columns:
        return []
    table = table.set_index("user_idx").reindex(users)
    out: list[Segmentation] = []
    for column in table.columns:
        lowered = column.lower()
        if column in _SKIP_COLUMNS or any(s in lowered for s in _SKIP_SUBSTRINGS):
            continue
        seg = _segment_column(column, table[column])
        if seg is not None:
            out.append(seg)
    return out


def _segment_column(column: str, values: pd.Series) -> Segmentation | None:
    numeric = pd.to_numeric(values, errors="coerce")
    present = values.notna()
    if present.any() and numeric[present].notna().all() and numeric.nunique() > 8:
        if "age" in column.lower():
            binned = pd.cut(numeric, bins=list(AGE_BINS), labels=list(AGE_LABELS), right=False)
        else:
            binned = pd.qcut(numeric, q=4, duplicates="drop", precision=0)
        labels = binned.astype(str).where(binned.notna(), "unknown")
        order = [str(c) for c in binned.cat.categories]
    else:
        labels = values.astype(str).where(present, "unknown")
        order = sorted(labels.unique())
        if len(order) > MAX_CATEGORIES or len(order) < 2:
            return None
    seen = set(labels)
    order = [o for o in order if o in seen] + (["unknown"] if "unknown" in seen and "unknown" not in order else [])
    return Segmentation(column, labels.to_numpy(dtype=str), tuple(order))


def segment_means(per_user: PerUserResults, seg: Segmentation, metric: str) -> pd.DataFrame:
    """``n_users`` and the mean of ``per_user.metrics[metric]`` for each label of ``seg`` (rows in display order)."""
    if metric not in per_user.metrics:
        raise KeyError(f"{metric!r} is not among the per-user metrics {sorted(per_user.metrics)}")
    frame = pd.DataFrame({"label": seg.labels, "value": per_user.metrics[metric]})
    grouped = frame.groupby("label", sort=False)["value"].agg(["size", "mean"]).reindex(list(seg.order))
    return grouped.rename(columns={"size": "n_users", "mean": metric}).dropna(subset=["n_users"])


def metric_curves(
    per_user: PerUserResults, names: tuple[str, ...] = ("recall", "ndcg", "precision", "hit")
) -> dict[str, np.ndarray]:
    """Mean ``metric@K`` for K = 1..len(lists), one array per metric name, from the kept per-user hits."""
    max_k = per_user.hits.shape[1]
    return {
        name: np.array(
            [RANKING_METRICS[name](per_user.hits, per_user.n_relevant, k).mean() for k in range(1, max_k + 1)]
        )
        for name in names
    }


def history_popularity(split: PreparedSplit, users: np.ndarray) -> np.ndarray:
    """Mean training popularity of the items each user trained on (0 for a user with no training item)."""
    train = split.matrix("train")[users]
    pop = split.item_popularity.astype(np.float64)
    sums = train @ pop
    return np.asarray(sums).ravel() / np.maximum(np.diff(train.indptr), 1)


def long_tail_share(topk: np.ndarray, split: PreparedSplit, k: int, head_share: float = 0.2) -> float:
    """Fraction of the top-``k`` recommendations that fall outside the head, the most popular items that together
    make up ``head_share`` of the catalogue (20% by default)."""
    pop = split.item_popularity
    n_head = max(1, round(head_share * split.n_items))
    head = np.zeros(split.n_items, dtype=bool)
    head[np.argsort(-pop, kind="stable")[:n_head]] = True
    lists = topk[:, :k]
    valid = lists >= 0
    if not valid.any():
        return 0.0
    return float((~head[lists[valid]]).mean())
