"""Population stability index: known values, and the weighted, quantile-binned form the monitor applies."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recstack.monitoring.drift import binned_psi, drift_table, psi, quantile_edges


def test_psi_known_values() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = (
        (0.1 - 0.25) * math.log(0.1 / 0.25)
        + (0.2 - 0.25) * math.log(0.2 / 0.25)
        + (0.3 - 0.25) * math.log(0.3 / 0.25)
        + (0.4 - 0.25) * math.log(0.4 / 0.25)
    )
    assert psi([25, 25, 25, 25], [10, 20, 30, 40]) == pytest.approx(expected)  # counts are normalised
    assert expected == pytest.approx(0.2282, abs=1e-4)
    assert psi([1, 1], [1, 0]) == pytest.approx((1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5))


def test_psi_rejects_mismatched_bins() -> None:
    with pytest.raises(ValueError, match="same bins"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="positive total"):
        psi([0, 0], [1, 1])


def test_quantile_edges_are_the_reference_deciles() -> None:
    values = np.arange(100, dtype=float)
    edges = quantile_edges(values, np.ones(100), 10)
    assert list(edges) == [9, 19, 29, 39, 49, 59, 69, 79, 89]
    assert list(quantile_edges(np.array([1.0, 2.0]), np.array([99.0, 1.0]), 10)) == [1.0]  # ties merge bins


def test_binned_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 50_000)
    same = rng.normal(0, 1, 50_000)
    shifted = rng.normal(1, 1, 50_000)
    ones = np.ones(50_000)
    assert binned_psi(ref, ones, same, ones) < 0.01
    assert binned_psi(ref, ones, shifted, ones) > 0.2
    # weights are counts: a histogram gives the samples' answer
    values, counts = np.unique(np.round(shifted, 1), return_counts=True)
    ref_values, ref_counts = np.unique(np.round(ref, 1), return_counts=True)
    assert binned_psi(ref_values, ref_counts, values, counts) == pytest.approx(
        binned_psi(np.round(ref, 1), ones, np.round(shifted, 1), ones)
    )


def test_drift_table_compares_each_day_with_its_previous_days() -> None:
    rows = []
    for day in range(10):
        loc = 0.0 if day < 9 else 2.0  # the last day moves
        for value in np.linspace(-2, 2, 41) + loc:
            rows.append((day, "b", "", "", value, 1.0))
    samples = pd.DataFrame(rows, columns=["day", "bundle", "experiment", "arm", "value", "weight"])
    counts = pd.DataFrame({"day": range(10), "bundle": "b", "experiment": "", "arm": "", "impressions": 100})
    table = drift_table(samples, counts, [7, 8, 9], reference_days=7, distribution="scores").set_index("day")
    assert table.loc[8, "psi"] == pytest.approx(0.0) and table.loc[8, "ref_days"] == 7
    assert table.loc[9, "psi"] > 1.0 and table.loc[9, "ref_impressions"] == 700
    first = drift_table(samples, counts, [0], reference_days=7)
    assert math.isnan(first.iloc[0]["psi"]) and first.iloc[0]["ref_days"] == 0  # no reference yet
