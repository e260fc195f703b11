"""The synthetic generator: deterministic for a seed, skewed popularity, and the structure its docstring promises."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recstack.data.sources import generate_synthetic, load_dataset


def test_tiny_and_schema() -> None:
    dataset = generate_synthetic(10, 20, 100, n_categories=3, seed=1)
    inter = dataset.interactions
    assert len(inter) == 100 and len(dataset.items) == 20 and len(dataset.users) == 10
    assert inter["timestamp"].dtype == np.int64 and inter["value"].dtype == np.float32
    for column in ("user_id", "item_id", "event_type"):
        assert pd.api.types.is_string_dtype(inter[column]) and inter[column].dtype != object
    assert set(inter["user_id"]) == set(dataset.users["user_id"])  # 100 rows are enough for every user
    assert set(inter["item_id"]) <= set(dataset.items["item_id"])
    assert dataset.items["year"].dtype == "Int64"
    assert set(dataset.demographic_columns) == {"age", "gender", "region"}


def test_deterministic_for_a_seed() -> None:
    a = generate_synthetic(200, 100, 5_000, seed=7)
    b = generate_synthetic(200, 100, 5_000, seed=7)
    c = generate_synthetic(200, 100, 5_000, seed=8)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.users, b.users)
    assert not a.interactions["item_id"].equals(c.interactions["item_id"])


def test_popularity_is_skewed() -> None:
    inter = generate_synthetic(2_000, 1_000, 50_000, zipf=1.1, seed=0).interactions
    counts = inter["item_id"].value_counts().to_numpy()
    top = counts[: len(counts) // 10].sum() / counts.sum()
    assert top > 0.4  # the top 10% of items take over 40% of the interactions (about 57% with this seed)
    flat = generate_synthetic(2_000, 1_000, 50_000, zipf=0.0, seed=0).interactions
    flat_counts = flat["item_id"].value_counts().to_numpy()
    assert flat_counts[: len(flat_counts) // 10].sum() / flat_counts.sum() < 0.2  # about 14% without skew


def test_structure_tastes_ratings_times_and_demographics() -> None:
    dataset = generate_synthetic(1_000, 400, 40_000, n_categories=8, seed=3)
    inter = dataset.interactions
    main_category = dataset.items.set_index("item_id")["categories"].str[0]
    picked = inter.assign(category=inter["item_id"].map(main_category).to_numpy())
    # Users concentrate on a few categories: the top category share is far above the 1/8 of a uniform pick.
    share = picked.groupby("user_id")["category"].agg(lambda c: c.value_counts(normalize=True).iloc[0])
    heavy = picked["user_id"].value_counts()
    assert share[heavy[heavy >= 20].index].mean() > 0.4
    # Ratings span 1-5, and a user's own top category gets higher ratings than the rest.
    assert set(inter["value"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    top = picked.groupby("user_id")["category"].agg(lambda c: c.value_counts().index[0])
    in_top = picked["category"].to_numpy() == picked["user_id"].map(top).to_numpy()
    assert inter["value"][in_top].mean() > inter["value"][~in_top].mean() + 0.2
    # Times increase within each user (rows are grouped by user) and stay inside the span.
    ts = inter["timestamp"].to_numpy()
    same_user = inter["user_id"].to_numpy()[1:] == inter["user_id"].to_numpy()[:-1]
    assert (np.diff(ts)[same_user] >= 0).all()
    assert ts.min() >= 1_577_836_800 and ts.max() <= 1_577_836_800 + 730 * 86_400
    # Titles read "Category Adjective Noun #id", and demographics lean with taste.
    first = dataset.items.iloc[0]
    assert first["title"].startswith(first["categories"][0] + " ") and first["title"].endswith("#0")
    users = dataset.users.set_index("user_id")
    taste = top.reindex(users.index)
    female_share = (users["gender"] == "F").groupby(taste).mean()
    assert female_share.max() - female_share.min() > 0.2


def test_load_dataset_passes_options() -> None:
    dataset = load_dataset("synthetic", "/nonexistent", n_users=30, n_items=10, n_interactions=300, seed=2)
    assert len(dataset.interactions) == 300 and len(dataset.users) == 30


def test_rejects_nonsense_sizes() -> None:
    with pytest.raises(ValueError, match="positive sizes"):
        generate_synthetic(0, 10, 10)


@pytest.mark.slow
def test_two_million_rows_have_no_python_strings() -> None:
    dataset = generate_synthetic(100_000, 10_000, 2_000_000, seed=0)
    inter = dataset.interactions
    assert len(inter) == 2_000_000 and inter["user_id"].dtype != object
    # Arrow-backed strings: about 10-20 bytes a row, not the ~60 of Python str objects.
    assert inter["user_id"].memory_usage(deep=True) < 2_000_000 * 25


def test_a_size_beyond_the_memory_budget_is_refused_up_front_with_the_estimate() -> None:
    with pytest.raises(MemoryError, match=r"needs about 6\.8 GiB .* more than the 4\.0 GiB memory_budget_gib=4"):
        generate_synthetic(1_000_000, 200_000, 50_000_000, memory_budget_gib=4)  # refused before generating anything
    small = generate_synthetic(50, 20, 300, memory_budget_gib=1)
    assert len(small.interactions) == 300


def test_the_memory_budget_is_a_limit_not_part_of_the_splits_hash() -> None:
    from recstack.data.build_split import config_hash

    source = {"name": "synthetic", "n_users": 10, "n_items": 5, "n_interactions": 50, "seed": 0}
    split = {"name": "random"}
    assert config_hash({"source": source}, split) == config_hash({"source": {**source, "memory_budget_gib": 8}}, split)
