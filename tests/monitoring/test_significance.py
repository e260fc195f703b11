"""Per-arm comparisons on cases with known answers: the two-proportion z-test and the bootstrap over users."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recstack.monitoring.significance import (
    ab_table,
    arm_estimates,
    bootstrap_users,
    two_proportion_ztest,
)


def test_ztest_known_values() -> None:
    test = two_proportion_ztest(50, 1000, 80, 1000)
    pooled = 130 / 2000
    z = 0.03 / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert test.z == pytest.approx(z) and z == pytest.approx(2.7213, abs=1e-3)
    assert test.p_value == pytest.approx(0.0065, abs=1e-4)
    assert test.significant
    half = 1.959964 * math.sqrt(0.05 * 0.95 / 1000 + 0.08 * 0.92 / 1000)
    assert (test.ci_low, test.ci_high) == pytest.approx((0.03 - half, 0.03 + half), abs=1e-6)


def test_ztest_no_difference_and_degenerate_cases() -> None:
    same = two_proportion_ztest(100, 1000, 100, 1000)
    assert same.z == 0 and same.p_value == pytest.approx(1.0) and not same.significant
    small = two_proportion_ztest(5, 100, 7, 100)
    assert not small.significant
    none = two_proportion_ztest(0, 10, 0, 10)  # no clicks anywhere: undefined, never significant
    assert math.isnan(none.z) and not none.significant
    empty = two_proportion_ztest(0, 0, 3, 10)
    assert math.isnan(empty.p_a) and not empty.significant
    with pytest.raises(ValueError, match="between 0 and the trials"):
        two_proportion_ztest(11, 10, 1, 10)


def test_bootstrap_is_seeded_and_centred() -> None:
    rng = np.random.default_rng(3)
    sums = rng.random(500)
    counts = np.ones(500)
    a = bootstrap_users(sums, counts, 400, np.random.default_rng(1))
    b = bootstrap_users(sums, counts, 400, np.random.default_rng(1))
    assert np.array_equal(a, b)
    assert a.mean() == pytest.approx(sums.mean(), abs=0.01)
    assert a.std() == pytest.approx(sums.std() / math.sqrt(500), rel=0.2)  # the standard error


def _per_user(values_a: np.ndarray, values_b: np.ndarray) -> pd.DataFrame:
    frames = []
    for arm, values in (("a", values_a), ("b", values_b)):
        frames.append(
            pd.DataFrame(
                {"experiment": "exp", "arm": arm, "user": np.arange(values.size), "map@10_sum": values, "judged": 1}
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_bootstrap_difference_detects_a_real_gap_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    counts = pd.DataFrame({"experiment": "exp", "arm": ["a", "b"], "impressions": 1000, "clicked": [100, 101]})
    same = arm_estimates(_per_user(rng.random(800), rng.random(800)), "map@10", 500, 0.05, seed=0)
    table = ab_table(counts, same, ctr_k=10, metric="map@10", alpha=0.05).set_index("metric")
    assert not table.loc["map@10", "significant"]
    assert table.loc["map@10", "ci_low"] < 0 < table.loc["map@10", "ci_high"]
    assert not table.loc["ctr@10", "significant"]

    gap = arm_estimates(_per_user(rng.random(800) * 0.5, rng.random(800) * 0.5 + 0.2), "map@10", 500, 0.05, seed=0)
    table = ab_table(counts, gap, ctr_k=10, metric="map@10", alpha=0.05).set_index("metric")
    row = table.loc["map@10"]
    assert row["significant"] and row["ci_low"] > 0.1 and row["ci_high"] < 0.3  # the true gap is 0.2
    assert row["diff"] == pytest.approx(row["arm_value"] - row["control_value"])
    assert (row["control"], row["arm"]) == ("a", "b")


def test_users_are_the_resampled_unit() -> None:
    """One user with many impressions dominates an impression-level mean; resampling users widens the interval."""
    heavy = pd.DataFrame(
        {"experiment": "e", "arm": "a", "user": np.arange(50), "map@10_sum": np.r_[90.0, np.zeros(49)],
         "judged": np.r_[100, np.ones(49, int)]}
    )  # fmt: skip
    estimate = arm_estimates(heavy, "map@10", 1000, 0.05, seed=0)[("e", "a")]
    assert estimate.value == pytest.approx(90 / 149)
    assert estimate.ci_low < 0.1 and estimate.ci_high > 0.6
