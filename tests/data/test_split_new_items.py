"""split=new_items: a seeded share of the items held out of train, their pairs only in valid and test, the other
items' pairs split per user as split=random does; users left without training data dropped and counted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from handmade import make_dataset, random_dataset

from recstack.config import compose, split_spec
from recstack.data.build_split import build_split
from recstack.data.clean import CleanConfig
from recstack.data.prepared import PreparedSplit
from recstack.data.split import SplitConfig, held_out_items, ratio_counts


def frames(built) -> dict[str, pd.DataFrame]:
    return {s: getattr(built, s).to_pandas() for s in ("train", "valid", "test")}


def test_held_out_items_never_train_and_the_rest_split_like_random() -> None:
    ds = random_dataset(300, 200, 6000, seed=3)
    built = build_split(ds, CleanConfig(), SplitConfig(name="new_items", seed=7))
    parts = frames(built)
    assert built.dropped_users == 0 and sum(len(f) for f in parts.values()) == 6000
    cold = held_out_items(np.arange(built.n_items), 0.1, np.random.default_rng(7))  # the split's first draw
    assert len(cold) == round(0.1 * built.n_items)
    assert not parts["train"]["item_idx"].isin(cold).any()
    cold_valid = parts["valid"]["item_idx"].isin(cold)
    cold_test = parts["test"]["item_idx"].isin(cold)
    n_cold = int(cold_valid.sum() + cold_test.sum())
    assert n_cold > 0 and int(cold_valid.sum()) == round(n_cold / 2)  # valid : test = 0.1 : 0.1, valid first
    # no (user, item) pair in two stages
    keys = {s: set(zip(f["user_idx"], f["item_idx"])) for s, f in parts.items()}
    assert not (keys["train"] & keys["valid"] or keys["train"] & keys["test"] or keys["valid"] & keys["test"])
    # the warm pairs of each user are split exactly as split=random counts them
    warm = {s: f[~f["item_idx"].isin(cold)] for s, f in parts.items()}
    per_user = np.stack([np.bincount(f["user_idx"], minlength=built.n_users) for f in warm.values()], axis=1)
    np.testing.assert_array_equal(per_user, ratio_counts(per_user.sum(axis=1), [0.8, 0.1, 0.1]))
    assert (per_user[:, 0] >= 1).all()  # every user keeps a training pair
    # rows grouped by user, in item order within a user (as split=random writes them)
    for frame in parts.values():
        keys_sorted = frame["user_idx"].to_numpy().astype(np.int64) * built.n_items + frame["item_idx"].to_numpy()
        assert (np.diff(keys_sorted) > 0).all()


def test_deterministic_per_seed() -> None:
    ds = random_dataset(100, 80, 3000, seed=4)
    a = build_split(ds, CleanConfig(), SplitConfig(name="new_items", seed=1))
    b = build_split(ds, CleanConfig(), SplitConfig(name="new_items", seed=1))
    c = build_split(ds, CleanConfig(), SplitConfig(name="new_items", seed=2))
    for stage in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(getattr(a, stage).to_pandas(), getattr(b, stage).to_pandas())
    untrained = [set(range(x.n_items)) - set(x.train.to_pandas()["item_idx"]) for x in (a, c)]
    assert untrained[0] != untrained[1]


def test_users_with_only_held_out_items_are_dropped_and_counted() -> None:
    # 6 items, cold_fraction 0.5: 3 held out. User "solo" has one item; whichever seed holds that item out drops it.
    users = ["a"] * 6 + ["b"] * 6 + ["solo"]
    items = [f"i{k}" for k in range(6)] * 2 + ["i0"]
    ds = make_dataset(users, items, list(range(13)))
    dropped = 0
    for seed in range(12):
        built = build_split(ds, CleanConfig(), SplitConfig(name="new_items", cold_fraction=0.5, seed=seed))
        cold = set(held_out_items(np.arange(6), 0.5, np.random.default_rng(seed)))
        solo_dropped = 0 in cold  # i0 is item 0
        assert built.dropped_users == int(solo_dropped) and built.dropped_interactions == int(solo_dropped)
        assert ("solo" in set(built.users["user_id"])) != solo_dropped
        assert not set(built.train.to_pandas()["item_id"]) & {f"i{k}" for k in cold}
        dropped += solo_dropped
    assert 0 < dropped < 12  # both cases happened


def test_a_catalogue_of_one_item_is_a_clear_error() -> None:
    ds = make_dataset(["a", "b"], ["x", "y"])  # one item each: holding out one item leaves a user empty-handed
    built = build_split(ds, CleanConfig(), SplitConfig(name="new_items", cold_fraction=0.5))
    assert built.dropped_users == 1 and built.n_users == 1 and built.n_items == 1
    with pytest.raises(ValueError, match="at least 2 items"):
        build_split(make_dataset(["a", "b"], ["x", "x"]), CleanConfig(), SplitConfig(name="new_items"))


def test_config_validation_and_the_config_file() -> None:
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="cold_fraction"):
            SplitConfig(name="new_items", cold_fraction=fraction)
    with pytest.raises(ValueError, match="give valid or test a positive ratio"):
        SplitConfig(name="new_items", ratios=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="new_items"):
        SplitConfig(name="new_item")  # the message lists the strategies
    spec = split_spec(compose("prepare", ["data=ml100k", "split=new_items"]))
    assert spec.split == SplitConfig(name="new_items", ratios=(0.8, 0.1, 0.1), seed=2020, cold_fraction=0.1)
    other = split_spec(compose("prepare", ["data=ml100k", "split=new_items", "split.cold_fraction=0.2"]))
    assert other.config_hash != spec.config_hash


@pytest.mark.slow
def test_ml100k_new_items(tmp_path_factory: pytest.TempPathFactory) -> None:
    from recstack.config import prepare_named

    s: PreparedSplit = prepare_named("ml100k", "new_items", out_root=tmp_path_factory.mktemp("processed"))
    assert (s.n_users, s.n_items) == (943, 1682) and s.manifest["dropped"]["users_without_train"] == 0
    assert len(s.train) + len(s.valid) + len(s.test) == 100_000
    cold = held_out_items(np.arange(1682), 0.1, np.random.default_rng(2020))
    assert len(cold) == 168 and not s.train["item_idx"].isin(cold).any()
    in_valid, in_test = s.valid["item_idx"].isin(cold).sum(), s.test["item_idx"].isin(cold).sum()
    assert abs(int(in_valid) - int(in_test)) <= 1 and in_valid + in_test > 5_000
