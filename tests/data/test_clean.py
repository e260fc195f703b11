"""Cleaning steps on hand-made data: exact duplicates, implicit threshold, k-core to a fixed point."""

from __future__ import annotations

import numpy as np
import pytest
from handmade import make_dataset

from recstack.data.clean import CleanConfig, clean, duplicate_mask, k_core_mask, threshold_mask
from recstack.data.idmap import encode, index_in_pair_order
from recstack.data.schema import DataError


def test_exact_duplicates_removed_but_repeats_at_other_times_kept() -> None:
    ds = make_dataset(["a", "a", "a", "b", "a"], ["x", "x", "x", "x", "x"], [1, 1, 2, 1, 1], [5, 5, 5, 5, 4])
    dup = duplicate_mask(encode(ds))
    # row 1 repeats row 0 exactly; row 2 is another time, row 3 another user, row 4 another value
    assert dup.tolist() == [False, True, False, False, False]


def test_threshold_keeps_values_at_or_above() -> None:
    assert threshold_mask(np.array([1.0, 3.9, 4.0, 5.0]), 4.0).tolist() == [False, False, True, True]
    assert threshold_mask(np.array([1.0, 2.0]), None).all()


def test_k_core_iterates_to_a_fixed_point() -> None:
    # users: A has 3 items, B 2, C 1. items: x is seen by A,B,C; y by A,B; z by A.
    # min_user=2, min_item=2: round 1 drops C (1 row) and z (1 row, only A); A then has 2 rows, still fine.
    user = np.array([0, 0, 0, 1, 1, 2])
    item = np.array([0, 1, 2, 0, 1, 0])
    keep, _ = k_core_mask(user, item, 2, 2)
    assert keep.tolist() == [True, True, False, True, True, False]
    # min_item=3 cascades: only x has 3 users, then A and B have 1 row each -> users fail min_user=2 -> empty
    keep, rounds = k_core_mask(user, item, 2, 3)
    assert not keep.any() and rounds >= 2


def test_k_core_result_satisfies_both_minimums() -> None:
    rng = np.random.default_rng(1)
    user = rng.zipf(1.4, 5000) % 300
    item = rng.zipf(1.4, 5000) % 200
    keep, _ = k_core_mask(user, item, 5, 5)
    assert keep.any()
    assert np.bincount(user[keep])[np.unique(user[keep])].min() >= 5
    assert np.bincount(item[keep])[np.unique(item[keep])].min() >= 5


def test_clean_reports_each_step() -> None:
    ds = make_dataset(["a", "a", "b", "b", "c"], ["x", "x", "x", "y", "y"], [1, 1, 2, 3, 4], [5, 5, 1, 4, 4])
    enc, report = clean(encode(ds), CleanConfig(dedup=True, implicit_threshold=4.0))
    assert report.duplicates_removed == 1
    assert report.below_threshold_removed == 1
    assert report.rows_out == len(enc) == 3


def test_empty_after_threshold_names_the_filter() -> None:
    ds = make_dataset(["a", "b"], ["x", "y"], values=[1.0, 2.0])
    with pytest.raises(DataError, match=r"implicit_threshold=4\.0 removed every interaction"):
        clean(encode(ds), CleanConfig(implicit_threshold=4.0))


def test_empty_after_k_core_names_the_filter() -> None:
    ds = make_dataset(["a", "b", "c"], ["x", "y", "z"])
    with pytest.raises(DataError, match="k-core min_user_interactions=50 removed every user"):
        clean(encode(ds), CleanConfig(min_user_interactions=50))


def test_clean_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        CleanConfig.from_mapping({"dedupe": True})


def test_duplicate_mask_equals_pandas_duplicated_in_any_row_order() -> None:
    rng = np.random.default_rng(7)
    n = 6000
    ds = make_dataset(
        rng.integers(0, 30, n), rng.integers(0, 20, n), rng.integers(0, 4, n), rng.integers(1, 3, n).astype(float)
    )
    expected = ds.interactions.duplicated(keep="first").to_numpy()
    assert expected.sum() > 100  # the data really has duplicates
    enc = encode(ds)
    np.testing.assert_array_equal(duplicate_mask(enc), expected)
    ordered = index_in_pair_order(enc)  # the order prepare() uses: the pair sort is skipped there
    np.testing.assert_array_equal(duplicate_mask(ordered), expected[ordered.row])
