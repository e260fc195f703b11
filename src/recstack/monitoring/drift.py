"""Population stability index: how far a day's served distribution moved from a reference window's.

``PSI = sum over bins of (a_i - e_i) * ln(a_i / e_i)``, ``e`` and ``a`` the reference's and the day's shares per bin,
bins the reference's quantiles (deciles by default), an empty bin's share floored at ``eps`` so the log stays finite.
The usual reading: below 0.1 stable, 0.1-0.2 a moderate shift, above 0.2 a significant one.

Two distributions are watched per bundle and arm (recstack.monitoring.online_metrics gives them as weighted values):
the served scores (fine histogram bins) and the popularity of the served items (one value per item, weighted by
how often it was shown). :func:`drift_table` compares each day with the previous ``reference_days`` days pooled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

EPS = 1e-4
SERIES_KEYS: tuple[str, ...] = ("bundle", "experiment", "arm")


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, eps: float = EPS) -> float:
    """PSI of two binned distributions (counts or shares, normalised here; same bins in the same order)."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or e.size < 1:
        raise ValueError(f"expected and actual must be 1-D with the same bins, got shapes {e.shape} and {a.shape}")
    if (e < 0).any() or (a < 0).any() or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("bin counts must be >= 0 with a positive total on both sides")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def quantile_edges(values: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner bin edges at the weighted quantiles ``1/n .. (n-1)/n`` of ``values`` (duplicates merged, so heavily tied
    values give fewer bins)."""
    order = np.argsort(values, kind="stable")
    v = np.asarray(values, dtype=np.float64)[order]
    w = np.asarray(weights, dtype=np.float64)[order]
    cum = np.cumsum(w)
    targets = cum[-1] * np.arange(1, n_bins) / n_bins
    return np.unique(v[np.minimum(np.searchsorted(cum, targets, side="left"), v.size - 1)])


def binned_psi(
    ref_values: np.ndarray,
    ref_weights: np.ndarray,
    values: np.ndarray,
    weights: np.ndarray,
    n_bins: int = 10,
    eps: float = EPS,
) -> float:
    """PSI of weighted samples: bins at the reference's weighted quantiles; a value equal to an edge falls in the
    bin that edge closes (both sides alike)."""
    edges = quantile_edges(ref_values, ref_weights, n_bins)
    ref_bins = np.searchsorted(edges, ref_values, side="left")
    day_bins = np.searchsorted(edges, values, side="left")
    size = edges.size + 1
    expected = np.bincount(ref_bins, weights=ref_weights, minlength=size)
    actual = np.bincount(day_bins, weights=weights, minlength=size)
    return psi(expected, actual, eps)


def drift_table(
    samples: pd.DataFrame,
    impressions: pd.DataFrame,
    days: Sequence[int],
    reference_days: int,
    n_bins: int = 10,
    distribution: str = "",
) -> pd.DataFrame:
    """PSI of each series (bundle, experiment, arm) on each of ``days`` against its previous ``reference_days`` days.

    ``samples``: ``(day, bundle, experiment, arm, value, weight)``; ``impressions``: ``(day, bundle, experiment, arm,
    impressions)``. Rows: ``day, bundle, experiment, arm, distribution, psi, impressions, ref_impressions,
    ref_days`` (``psi`` NaN when either side is empty)."""
    columns = ["day", *SERIES_KEYS, "distribution", "psi", "impressions", "ref_impressions", "ref_days"]
    if samples.empty:
        return pd.DataFrame(columns=columns)
    counts = impressions.set_index(["day", *SERIES_KEYS])["impressions"]
    rows = []
    for key, series in samples.groupby(list(SERIES_KEYS), sort=True):
        by_day = {int(d): part for d, part in series.groupby("day")}
        for day in days:
            ref_span = [d for d in range(day - reference_days, day) if d in by_day]
            n_day = int(counts.get((day, *key), 0))
            n_ref = int(sum(counts.get((d, *key), 0) for d in ref_span))
            value = np.nan
            if day in by_day and ref_span:
                ref = pd.concat([by_day[d] for d in ref_span])
                cur = by_day[day]
                if ref["weight"].sum() > 0 and cur["weight"].sum() > 0:
                    value = binned_psi(
                        ref["value"].to_numpy(np.float64),
                        ref["weight"].to_numpy(np.float64),
                        cur["value"].to_numpy(np.float64),
                        cur["weight"].to_numpy(np.float64),
                        n_bins,
                    )
            if day in by_day or ref_span:
                rows.append((day, *key, distribution, value, n_day, n_ref, len(ref_span)))
    return pd.DataFrame(rows, columns=columns)
