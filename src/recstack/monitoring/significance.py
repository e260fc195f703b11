"""Is arm B different from arm A? Pure functions over counts and per-user sums, plus the per-experiment table.

* CTR: :func:`two_proportion_ztest` on impressions with a click (pooled-variance z statistic, two-sided p-value,
  unpooled Wald interval on the difference). It treats impressions as independent; a user's impressions are not, so
  with many impressions per user its p-value is optimistic: the bootstrap below is the sturdier reading.
* Online MAP@K (or NDCG@K): :func:`bootstrap_users`, a percentile bootstrap that resamples *users* (with all their
  impressions) within each arm, independently per arm; the statistic is the impression-weighted mean (sum over the
  resampled users of their per-impression values / their number of judged impressions), the same figure the daily
  table reports. A difference is significant when its ``1 - alpha`` interval excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

_MAX_DRAWS = 4_000_000  # resampled user indices held at once (bounds memory for large arms)


@dataclass(frozen=True)
class ProportionTest:
    """``p_b - p_a`` with its z statistic, two-sided p-value and ``1 - alpha`` interval."""

    x_a: int
    n_a: int
    x_b: int
    n_b: int
    p_a: float
    p_b: float
    diff: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    significant: bool


def two_proportion_ztest(x_a: int, n_a: int, x_b: int, n_b: int, alpha: float = 0.05) -> ProportionTest:
    """Two-sided two-proportion z-test of ``x_b / n_b`` against ``x_a / n_a``. Undefined cases (an empty arm, or both
    proportions 0 or 1) give NaN statistics and ``significant=False``."""
    for name, x, n in (("a", x_a, n_a), ("b", x_b, n_b)):
        if n < 0 or x < 0 or x > n:
            raise ValueError(f"arm {name}: successes {x} must be between 0 and the trials {n}")
    nan = math.nan
    p_a = x_a / n_a if n_a else nan
    p_b = x_b / n_b if n_b else nan
    diff = p_b - p_a
    z = p_value = low = high = nan
    if n_a and n_b:
        pooled = (x_a + x_b) / (n_a + n_b)
        se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
        if se_pooled > 0:
            z = diff / se_pooled
            p_value = math.erfc(abs(z) / math.sqrt(2))
        se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
        half = NormalDist().inv_cdf(1 - alpha / 2) * se
        low, high = diff - half, diff + half
    significant = bool(p_value == p_value and p_value < alpha)
    return ProportionTest(x_a, n_a, x_b, n_b, p_a, p_b, diff, z, p_value, low, high, significant)


def bootstrap_users(sums: np.ndarray, counts: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``samples`` bootstrap replicates of ``sum(sums) / sum(counts)`` resampling users (rows) with replacement.

    ``sums[u]``: the user's total of the per-impression metric, ``counts[u]`` (>= 1): their judged impressions."""
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    n = sums.size
    if n == 0:
        return np.full(samples, np.nan)
    out = np.empty(samples)
    step = max(1, _MAX_DRAWS // n)
    for start in range(0, samples, step):
        stop = min(samples, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    return out


def interval(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    """The percentile interval ``[alpha/2, 1 - alpha/2]`` of bootstrap replicates (NaN when there are none)."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class ArmEstimate:
    """One arm's metric over the window: value (impression-weighted mean), bootstrap interval, users and judged
    impressions, and its replicates (kept for differences, not written out)."""

    value: float
    ci_low: float
    ci_high: float
    users: int
    judged: int
    replicates: np.ndarray


def estimate_arm(
    sums: np.ndarray, counts: np.ndarray, samples: int, alpha: float, rng: np.random.Generator
) -> ArmEstimate:
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    value = float(sums.sum() / total) if total else math.nan
    replicates = bootstrap_users(sums, counts, samples, rng)
    low, high = interval(replicates, alpha)
    return ArmEstimate(value, low, high, int(sums.size), int(total), replicates)


def arm_estimates(
    per_user: pd.DataFrame, metric: str, samples: int, alpha: float, seed: int
) -> dict[tuple[str, str], ArmEstimate]:
    """Per (experiment, arm): the metric's estimate from ``per_user`` rows ``(experiment, arm, user_id, <metric>_sum,
    judged)``. Each arm draws from its own generator seeded by ``(seed, position of the arm in sorted order)``."""
    out: dict[tuple[str, str], ArmEstimate] = {}
    groups = sorted(per_user.groupby(["experiment", "arm"], sort=True), key=lambda pair: pair[0])
    for i, ((experiment, arm), part) in enumerate(groups):
        rng = np.random.default_rng([seed, i])
        out[(str(experiment), str(arm))] = estimate_arm(
            part[f"{metric}_sum"].to_numpy(), part["judged"].to_numpy(), samples, alpha, rng
        )
    return out


AB_COLUMNS: tuple[str, ...] = (
    "experiment",
    "control",
    "arm",
    "metric",
    "control_value",
    "arm_value",
    "diff",
    "ci_low",
    "ci_high",
    "p_value",
    "method",
    "significant",
    "control_n",
    "arm_n",
)
AB_SHOWN_COLUMNS: tuple[str, ...] = tuple(c for c in AB_COLUMNS if c not in ("control_n", "arm_n"))
"""What the HTML report shows of :func:`ab_table`: all but the sample sizes."""


def ab_table(
    ctr_counts: pd.DataFrame,
    estimates: dict[tuple[str, str], ArmEstimate],
    *,
    ctr_k: int,
    metric: str,
    alpha: float,
    control: str | None = None,
) -> pd.DataFrame:
    """Each experiment's arms against its control: CTR@k by the z-test, ``metric`` by the user bootstrap.

    ``ctr_counts``: ``(experiment, arm, impressions, clicked)`` over the window. Rows without an experiment
    (``experiment == ''``) are not compared. ``control``: the control arm's name (None: the first arm by name; an
    experiment without that arm uses its first arm too)."""
    rows = []
    experiments = sorted(e for e in ctr_counts["experiment"].unique() if e)
    for experiment in experiments:
        part = ctr_counts[ctr_counts["experiment"] == experiment].set_index("arm").sort_index()
        arms = [str(a) for a in part.index]
        if len(arms) < 2:
            continue
        base = control if control in arms else arms[0]
        for arm in arms:
            if arm == base:
                continue
            test = two_proportion_ztest(
                int(part.loc[base, "clicked"]),
                int(part.loc[base, "impressions"]),
                int(part.loc[arm, "clicked"]),
                int(part.loc[arm, "impressions"]),
                alpha,
            )
            rows.append(
                (
                    experiment, base, arm, f"ctr@{ctr_k}", test.p_a, test.p_b, test.diff, test.ci_low, test.ci_high,
                    test.p_value, "two-proportion z-test", test.significant, test.n_a, test.n_b,
                )
            )  # fmt: skip
            a = estimates.get((experiment, base))
            b = estimates.get((experiment, arm))
            if a is None or b is None:
                rows.append((experiment, base, arm, metric, *(math.nan,) * 6, "bootstrap over users", False, 0, 0))
                continue
            low, high = interval(b.replicates - a.replicates, alpha)
            significant = bool(low == low and (low > 0 or high < 0))
            rows.append(
                (
                    experiment, base, arm, metric, a.value, b.value, b.value - a.value, low, high, math.nan,
                    "bootstrap over users", significant, a.users, b.users,
                )
            )  # fmt: skip
    return pd.DataFrame(rows, columns=list(AB_COLUMNS))
