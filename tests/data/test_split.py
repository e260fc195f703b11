"""Split invariants: RecBole's counting, no leakage, per-user proportions, chronology, determinism, ML-100K."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from handmade import make_dataset, random_dataset
from scipy import stats

from recstack.data.build_split import build_split
from recstack.data.clean import CleanConfig
from recstack.data.prepared import PreparedSplit
from recstack.data.split import SplitConfig, ratio_counts, shuffle_within_groups


def recbole_calcu_split_ids(tot: int, ratios: list[float]) -> list[int]:
    """RecBole 1.2 ``Dataset._calcu_split_ids`` (recbole/data/dataset/dataset.py) after ``split_by_ratio``'s
    normalisation, returning the part sizes instead of the cut points: the reference we must match."""
    tot_ratio = sum(ratios)
    ratios = [r / tot_ratio for r in ratios]
    cnt = [int(ratios[i] * tot) for i in range(len(ratios))]
    cnt[0] = tot - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * tot < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


@pytest.mark.parametrize("ratios", [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.6, 0.2, 0.2], [8, 1, 1], [0.9, 0.0, 0.1]])
def test_ratio_counts_match_recbole(ratios: list[float]) -> None:
    n = np.arange(0, 400)
    ours = ratio_counts(n, ratios)
    assert ours.tolist() == [recbole_calcu_split_ids(int(t), ratios) for t in n]


def frames(built) -> dict[str, pd.DataFrame]:
    return {s: getattr(built, s).to_pandas() for s in ("train", "valid", "test")}


def assert_no_leakage(parts: dict[str, pd.DataFrame]) -> None:
    keys = {s: set(zip(f["user_idx"], f["item_idx"])) for s, f in parts.items()}
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["valid"]
    assert not keys["valid"] & keys["test"]


def assert_ratio_counts(parts: dict[str, pd.DataFrame], n_users: int, ratios: list[float]) -> None:
    per_user = np.stack([np.bincount(f["user_idx"], minlength=n_users) for f in parts.values()], axis=1)
    expected = ratio_counts(per_user.sum(axis=1), ratios)
    np.testing.assert_array_equal(per_user, expected)
    # what the counting guarantees: valid and test within one interaction of their share (rounded down, or bumped
    # to 1), train takes both remainders, so within two
    share = per_user.sum(axis=1, keepdims=True) * np.asarray(ratios) / sum(ratios)
    assert (np.abs(per_user[:, 1:] - share[:, 1:]) < 1.0 + 1e-9).all()
    assert (np.abs(per_user[:, 0] - share[:, 0]) < 2.0 + 1e-9).all()
    assert (per_user[:, 0] >= 1).all()  # nobody is only in valid/test


def assert_chronological(parts: dict[str, pd.DataFrame]) -> None:
    last_train = parts["train"].groupby("user_idx")["timestamp"].max()
    first_valid = parts["valid"].groupby("user_idx")["timestamp"].min()
    last_valid = parts["valid"].groupby("user_idx")["timestamp"].max()
    first_test = parts["test"].groupby("user_idx")["timestamp"].min()
    common = last_train.index.intersection(first_valid.index)
    assert (last_train[common] <= first_valid[common]).all()
    common = last_valid.index.intersection(first_test.index)
    assert (last_valid[common] <= first_test[common]).all()
    common = last_train.index.intersection(first_test.index)
    assert (last_train[common] <= first_test[common]).all()


@pytest.mark.parametrize("name", ["random", "chrono"])
def test_ratio_splits(name: str) -> None:
    ds = random_dataset(300, 200, 6000, seed=3)
    built = build_split(ds, CleanConfig(), SplitConfig(name=name))
    parts = frames(built)
    assert sum(len(f) for f in parts.values()) == 6000
    assert_no_leakage(parts)
    assert_ratio_counts(parts, built.n_users, [0.8, 0.1, 0.1])
    if name == "chrono":
        assert_chronological(parts)


def test_random_split_is_deterministic_per_seed_and_shuffles() -> None:
    ds = random_dataset(100, 80, 3000, seed=4)
    a = build_split(ds, CleanConfig(), SplitConfig(seed=1)).test.to_pandas()
    b = build_split(ds, CleanConfig(), SplitConfig(seed=1)).test.to_pandas()
    c = build_split(ds, CleanConfig(), SplitConfig(seed=2)).test.to_pandas()
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == len(c) and not a.equals(c)


def test_random_split_is_uniform_within_a_user() -> None:
    # one user with 10 items: over seeds, every item should land in test about equally often (1 of 10 each time)
    ds = make_dataset(["u"] * 10 + ["v"], [f"i{k}" for k in range(10)] + ["i0"])
    hits = np.zeros(10)
    for seed in range(120):
        test = build_split(ds, CleanConfig(), SplitConfig(seed=seed)).test.to_pandas()
        hits[test.loc[test["user_id"] == "u", "item_idx"].to_numpy()] += 1
    assert hits.sum() == 120
    assert stats.chisquare(hits).pvalue > 1e-3  # expectation 12 each; a biased shuffle would pile up


def test_loo_latest_is_test_second_latest_valid() -> None:
    ds = random_dataset(200, 150, 4000, seed=5)
    built = build_split(ds, CleanConfig(), SplitConfig(name="loo"))
    parts = frames(built)
    assert_no_leakage(parts)
    assert_chronological(parts)
    sizes = pd.concat(parts.values()).groupby("user_idx").size()
    eligible = set(sizes[sizes >= 3].index)
    assert set(parts["test"]["user_idx"]) == eligible == set(parts["valid"]["user_idx"])
    assert parts["test"].groupby("user_idx").size().eq(1).all()
    assert set(sizes[sizes < 3].index) <= set(parts["train"]["user_idx"])


def test_loo_ties_break_by_source_order() -> None:
    ds = make_dataset(["u"] * 4, ["a", "b", "c", "d"], [5, 5, 5, 5])
    parts = frames(build_split(ds, CleanConfig(), SplitConfig(name="loo")))
    assert parts["test"]["item_id"].tolist() == ["d"] and parts["valid"]["item_id"].tolist() == ["c"]


def test_time_split_cuts_globally_and_drops_users_without_training() -> None:
    # user a spans the whole range, b only appears after the valid cut
    ds = make_dataset(["a", "a", "a", "b", "b"], ["x", "y", "z", "x", "w"], [10, 20, 30, 25, 26])
    built = build_split(ds, CleanConfig(), SplitConfig(name="time", valid_start=15, test_start=25))
    parts = frames(built)
    assert parts["train"]["item_id"].tolist() == ["x"]
    assert parts["valid"]["item_id"].tolist() == ["y"]
    assert parts["test"]["item_id"].tolist() == ["z"]
    assert built.dropped_users == 1 and built.dropped_interactions == 2
    assert built.users["user_id"].tolist() == ["a"]
    assert built.items["item_id"].tolist() == ["x", "y", "z"]  # w only belonged to b
    assert parts["test"]["item_idx"].tolist() == [2]


def test_time_split_with_iso_dates_and_quantiles() -> None:
    ds = random_dataset(100, 80, 3000, seed=6)
    built = build_split(ds, CleanConfig(), SplitConfig(name="time", valid_start=0.7, test_start=0.85))
    parts = frames(built)
    assert parts["train"]["timestamp"].max() < parts["valid"]["timestamp"].min()
    assert parts["valid"]["timestamp"].max() < parts["test"]["timestamp"].min()
    built = build_split(
        ds, CleanConfig(), SplitConfig(name="time", valid_start="2003-01-01", test_start="2004-06-01T00:00:00")
    )
    cut = pd.Timestamp("2003-01-01", tz="UTC").timestamp()
    assert frames(built)["train"]["timestamp"].max() < cut <= frames(built)["valid"]["timestamp"].min()


def test_repeated_pairs_stay_together() -> None:
    # "u" meets item x three times; whatever stage x lands in, all three rows go there
    ds = make_dataset(["u"] * 12, ["x", "x", "x", *[f"i{k}" for k in range(9)]], list(range(12)))
    for name in ("random", "chrono", "loo"):
        for seed in range(20):
            built = build_split(ds, CleanConfig(), SplitConfig(name=name, seed=seed))
            parts = frames(built)
            stages_of_x = [s for s, f in parts.items() if (f["item_id"] == "x").any()]
            assert len(stages_of_x) == 1
            assert (parts[stages_of_x[0]]["item_id"] == "x").sum() == 3
            assert_no_leakage(parts)
    # the pair counts once in the ratio: 10 pairs -> 8/1/1 pairs, 10/1/1 rows if x is in train
    built = build_split(ds, CleanConfig(), SplitConfig(name="chrono"))
    assert built.counts() == {"train": 10, "valid": 1, "test": 1} and built.n_pairs == 10


def test_ids_are_contiguous_in_natural_order() -> None:
    ds = make_dataset(["10", "9", "100", "9"], ["b", "a", "c", "c"])
    built = build_split(ds, CleanConfig(), SplitConfig(name="chrono"))
    assert built.users["user_id"].tolist() == ["9", "10", "100"]
    assert built.users["user_idx"].tolist() == [0, 1, 2]
    assert built.items["item_id"].tolist() == ["a", "b", "c"]


def test_items_without_metadata_get_empty_fields() -> None:
    meta = pd.DataFrame(
        {
            "item_id": pd.Series(["x", "unused"], dtype="str"),
            "title": pd.Series(["X the movie", "U"], dtype="str"),
            "year": pd.array([1999, 2000], dtype="Int64"),
            "categories": [["Drama"], ["Comedy"]],
            "text": pd.Series(["tags", ""], dtype="str"),
            "extra": pd.Series(["e1", "e2"], dtype="str"),
        }
    )
    users = pd.DataFrame({"user_id": pd.Series(["a"], dtype="str"), "gender": pd.Series(["F"], dtype="str")})
    ds = make_dataset(["a", "b", "b"], ["x", "y", "x"], item_meta=meta, user_meta=users)
    built = build_split(ds, CleanConfig(), SplitConfig(name="chrono"))
    items = built.items.set_index("item_id")
    assert list(built.items.columns) == ["item_idx", "item_id", "title", "year", "categories", "text", "extra"]
    assert items.loc["x", "title"] == "X the movie" and list(items.loc["x", "categories"]) == ["Drama"]
    assert (
        items.loc["y", "title"] == "" and list(items.loc["y", "categories"]) == [] and pd.isna(items.loc["y", "year"])
    )
    assert "unused" not in items.index
    assert built.users.set_index("user_id")["gender"].isna().tolist() == [False, True]


@pytest.mark.slow
def test_ml100k_default_split(ml100k_split: PreparedSplit) -> None:
    s = ml100k_split
    assert (s.n_users, s.n_items) == (943, 1682)
    parts = {"train": s.train, "valid": s.valid, "test": s.test}
    assert sum(len(f) for f in parts.values()) == 100_000
    assert 79_000 <= len(s.train) <= 81_000
    assert_no_leakage(parts)
    assert_ratio_counts(parts, s.n_users, [0.8, 0.1, 0.1])
    assert s.users["user_id"].iloc[0] == "1" and s.items["item_id"].iloc[0] == "1"
    assert s.items["title"].iloc[0] == "Toy Story"
    for f in parts.values():
        assert f["user_idx"].dtype == np.int32 and f["item_idx"].dtype == np.int32
        assert (s.users["user_id"].to_numpy()[f["user_idx"]] == f["user_id"].to_numpy()).all()
        assert (s.items["item_id"].to_numpy()[f["item_idx"]] == f["item_id"].to_numpy()).all()


@pytest.mark.parametrize("name", ["random", "chrono", "loo"])
def test_row_order_in_the_files(name: str) -> None:
    ds = random_dataset(50, 40, 800, seed=8)
    for frame in frames(build_split(ds, CleanConfig(), SplitConfig(name=name))).values():
        second = "item_idx" if name == "random" else "timestamp"
        keys = frame[["user_idx", second]].to_numpy()
        assert (np.diff(keys[:, 0]) >= 0).all()
        same_user = np.diff(keys[:, 0]) == 0
        assert (np.diff(keys[:, 1])[same_user] >= 0).all()


@pytest.mark.parametrize("rand_bits", [None, 1, 3])
def test_shuffle_within_groups_is_uniform_even_with_tied_keys(rand_bits: int | None) -> None:
    # 30,000 groups of 3: each group's order is one of 6 permutations, all equally likely (rand_bits forces ties)
    group = np.repeat(np.arange(30_000), 3)
    order = shuffle_within_groups(group, np.random.default_rng(5), rand_bits=rand_bits)
    assert sorted(order.tolist()) == list(range(len(group)))
    assert (group[order] == group).all()  # nobody leaves its group
    local = (order - np.repeat(np.arange(30_000) * 3, 3)).reshape(-1, 3)
    codes = local[:, 0] * 3 + local[:, 1]  # identifies the permutation
    counts = np.unique(codes, return_counts=True)[1]
    assert len(counts) == 6
    assert stats.chisquare(counts).pvalue > 1e-3


def test_shuffle_within_groups_uneven_groups() -> None:
    group = np.array([0, 0, 0, 0, 2, 5, 5, 7, 7, 7])
    order = shuffle_within_groups(group, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(10)) and (group[order] == group).all()
