"""Who a model serves well: per-user metrics grouped by training activity, by each demographic column and by any
segment set (a membership table, e.g. what ``recstack-segments run`` writes).

Each segmentation is a label per evaluated user (a numpy array of strings, in the order of
:attr:`~recstack.evaluation.evaluator.PerUserResults.users`); :func:`segment_means` averages any per-user metric
within each label. A segment set may overlap (a user in several segments, or none), so it is a users x segments
indicator instead (:func:`match_segment_set`), averaged by :func:`segment_set_means`. Curves over K and popularity figures for the report are computed here too, from the per-user
hits and lists the evaluator keeps, so the report module only lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

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


# ---- Segment sets: named, possibly overlapping groups of users from a membership table --------------------------------

MEMBERSHIP_COLUMNS: tuple[str, ...] = ("user_id", "segment")
MEMBERSHIP_FILE = "membership.parquet"  # what `recstack-segments run` writes in its output folder


@dataclass(frozen=True)
class SegmentSet:
    """Segments given by membership: one row per (user, segment), ``user_id`` as the split knows it (the lake's
    pseudonym for lake-trained splits, the dataset's ids for MovieLens). A user may be in several segments or none."""

    source: str
    membership: pd.DataFrame  # columns user_id (str), segment (str); no duplicate rows

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.membership["segment"].unique()))


@dataclass(frozen=True)
class SegmentSetMatch:
    """A segment set matched to the evaluated users of one run set.

    ``indicator[s, j]`` says whether evaluated user ``j`` (position in ``PerUserResults.users``) is in segment
    ``names[s]``. Per segment, ``members`` counts the distinct users of the table, ``not_in_split`` those whose id
    the split does not know and ``not_evaluated`` those it knows but did not evaluate (no item in the stage)."""

    names: tuple[str, ...]
    indicator: sp.csr_matrix
    members: np.ndarray
    not_in_split: np.ndarray
    not_evaluated: np.ndarray
    n_not_in_split: int  # distinct users over all segments
    n_not_evaluated: int

    @property
    def n_users(self) -> np.ndarray:
        """Evaluated users per segment."""
        return np.asarray(self.indicator.sum(axis=1)).ravel().astype(np.int64)


def read_segment_set(path: str | Path) -> SegmentSet:
    """A membership table from Parquet or CSV (columns ``user_id``, ``segment``; others, e.g. ``entered_ms``, are
    ignored). A folder is read as the output of ``recstack-segments run`` (its ``membership.parquet``)."""
    path = Path(path)
    if path.is_dir():
        if not (path / MEMBERSHIP_FILE).is_file():
            raise FileNotFoundError(
                f"segment set {path} is a folder without {MEMBERSHIP_FILE}; pass the membership table itself or the "
                f"output folder of `recstack-segments run`"
            )
        path = path / MEMBERSHIP_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"segment set {path} does not exist; pass a Parquet or CSV file with columns user_id, segment"
        )
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        columns = pq.read_schema(path).names
        _check_membership_columns(columns, path)
        frame = pd.read_parquet(path, columns=list(MEMBERSHIP_COLUMNS))
    elif suffix in (".csv", ".tsv"):
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        _check_membership_columns(list(frame.columns), path)
        frame = frame[list(MEMBERSHIP_COLUMNS)].replace("", None)
    else:
        raise ValueError(f"segment set {path}: unknown file type {suffix!r}; use .parquet or .csv (user_id,segment)")
    return segment_set_from_frame(frame, str(path))


def _check_membership_columns(columns: list[str], path: Path) -> None:
    missing = [c for c in MEMBERSHIP_COLUMNS if c not in columns]
    if missing:
        raise ValueError(
            f"segment set {path} has columns {columns}; expected columns user_id and segment (one row per user and "
            f"segment, as `recstack-segments run` writes {MEMBERSHIP_FILE}); missing {missing}"
        )
    if "left_ms" in columns:
        raise ValueError(
            f"segment set {path} has a left_ms column: it is a membership history (past spells), not the members now; "
            f"pass {MEMBERSHIP_FILE}"
        )


def segment_set_from_frame(frame: pd.DataFrame, source: str = "memory") -> SegmentSet:
    """A :class:`SegmentSet` from a frame with ``user_id`` and ``segment`` columns (ids compared as strings)."""
    _check_membership_columns(list(frame.columns), Path(source))
    table = frame[list(MEMBERSHIP_COLUMNS)]
    empty = table.isna().any(axis=1)
    if empty.any():
        raise ValueError(
            f"segment set {source}: {int(empty.sum())} rows lack a user_id or a segment (first at row "
            f"{int(np.flatnonzero(empty.to_numpy())[0])}); every row names one user and one segment"
        )
    table = table.astype(str).drop_duplicates(ignore_index=True)
    return SegmentSet(source, table)


def match_segment_set(segment_set: SegmentSet, split: PreparedSplit, users: np.ndarray) -> SegmentSetMatch:
    """Match the set's ``user_id``s to ``split``'s users and those to the evaluated ``users`` (user indices, in the
    evaluator's order). Ids the split does not know are counted, never an error."""
    names = segment_set.names
    table = segment_set.membership
    known = pd.Index(split.users["user_id"].astype(str))
    user_idx = split.users["user_idx"].to_numpy(dtype=np.int64)
    found = known.get_indexer(table["user_id"])
    idx = np.where(found >= 0, user_idx[np.maximum(found, 0)], -1)
    position = np.full(split.n_users, -1, dtype=np.int64)
    position[users] = np.arange(len(users))
    pos = np.where(idx >= 0, position[np.maximum(idx, 0)], -1)
    seg = pd.Index(names).get_indexer(table["segment"])
    evaluated = pos >= 0
    indicator = sp.csr_matrix(
        (np.ones(int(evaluated.sum()), dtype=np.float64), (seg[evaluated], pos[evaluated])),
        shape=(len(names), len(users)),
    )
    n_seg = len(names)
    outside, unevaluated = idx < 0, (idx >= 0) & ~evaluated
    return SegmentSetMatch(
        names=names,
        indicator=indicator,
        members=np.bincount(seg, minlength=n_seg),
        not_in_split=np.bincount(seg[outside], minlength=n_seg),
        not_evaluated=np.bincount(seg[unevaluated], minlength=n_seg),
        n_not_in_split=int(table["user_id"][outside].nunique()),
        n_not_evaluated=int(table["user_id"][unevaluated].nunique()),
    )


def segment_set_means(per_user: PerUserResults, match: SegmentSetMatch, metric: str) -> np.ndarray:
    """Mean of ``per_user.metrics[metric]`` over each segment's evaluated users (NaN for a segment with none); a user
    in several segments counts in each."""
    if metric not in per_user.metrics:
        raise KeyError(f"{metric!r} is not among the per-user metrics {sorted(per_user.metrics)}")
    sums = match.indicator @ per_user.metrics[metric].astype(np.float64)
    n = match.n_users
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, sums / np.maximum(n, 1), np.nan)


def in_no_segment(match: SegmentSetMatch) -> np.ndarray:
    """Boolean mask over the evaluated users: in none of the set's segments."""
    return np.asarray(match.indicator.sum(axis=0)).ravel() == 0
