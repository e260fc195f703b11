"""Popularity rankings for users the model knows nothing about: overall, and per demographic segment.

Built once at load from the bundle's seen matrix and user table, so a cold request costs one dictionary lookup.
A segment is one ``(column, value)`` of the user table (``("gender", "F")``); columns with too many distinct values
(zip codes; the limit is the bundle's, which keeps no other columns) and segments with too few users are skipped,
since their rankings would be noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recstack.bundle.layout import MAX_SEGMENT_VALUES

ID_COLUMNS = ("user_idx", "user_id")


@dataclass(frozen=True)
class PopularityFallback:
    """Item indices ordered by popularity (most first), with a score in [0, 1] per position."""

    overall: np.ndarray
    overall_scores: np.ndarray
    by_segment: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]]

    @classmethod
    def build(
        cls,
        popularity: np.ndarray,
        seen: sp.csr_matrix | None = None,
        users: pd.DataFrame | None = None,
        *,
        max_distinct: int = MAX_SEGMENT_VALUES,
        min_users: int = 20,
        keep: int = 5000,
    ) -> PopularityFallback:
        """``popularity``: interactions per item; ``seen``/``users`` enable segments; ``keep``: ranking length kept."""
        overall, overall_scores = _ranking(np.asarray(popularity, dtype=np.float64), keep)
        segments: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        if seen is not None and users is not None and len(users):
            seen = sp.csr_matrix(seen)
            user_rows = users["user_idx"].to_numpy(np.int64)
            for column in users.columns:
                if column in ID_COLUMNS:
                    continue
                values = users[column].astype("string").fillna("")
                distinct = values.unique()
                if len(distinct) > max_distinct:
                    continue
                for value in distinct:
                    rows = user_rows[(values == value).to_numpy()]
                    if len(rows) < min_users or value == "":
                        continue
                    counts = np.asarray(seen[rows].sum(axis=0)).ravel()
                    segments[(str(column), str(value))] = _ranking(counts, keep)
        return cls(overall=overall, overall_scores=overall_scores, by_segment=segments)

    def ranking(self, segment: Mapping[str, str] | None) -> tuple[np.ndarray, np.ndarray, bool]:
        """The ranking for the first known ``(column, value)`` of ``segment``, else overall; third item: segmented."""
        if segment:
            for column, value in segment.items():
                found = self.by_segment.get((column, value))
                if found is not None:
                    return found[0], found[1], True
        return self.overall, self.overall_scores, False

    @property
    def segments(self) -> list[tuple[str, str]]:
        return sorted(self.by_segment)


def _ranking(counts: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    keep = min(keep, len(counts))
    # Stable order on ties (lower index first) so answers are reproducible across processes.
    order = np.lexsort((np.arange(len(counts)), -counts))[:keep].astype(np.int64)
    top = counts[order[0]] if keep else 1.0
    scores = (counts[order] / top if top > 0 else np.zeros(keep)).astype(np.float32)
    return order, scores
