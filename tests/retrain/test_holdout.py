"""Judging bundles on the hold-out by id: the served pipeline's answers, scored like the offline evaluator scores them,
whatever indices a bundle gives its users and items, with users and items a bundle does not know."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recstack.bundle.reader import Bundle
from recstack.bundle.writer import write_bundle
from recstack.data.prepared import PreparedSplit
from recstack.offline.report import evaluate_bundle
from recstack.retrain.holdout import build_holdout, score_bundle


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory, tiny_split_writer: Callable[..., Path]) -> PreparedSplit:
    return PreparedSplit.load(tiny_split_writer(tmp_path_factory.mktemp("split") / "tiny", n_users=30, n_items=40))


def make_bundle(
    out: Path,
    split: PreparedSplit,
    users: Sequence[int],
    items: Sequence[int],
    seen_stages: Sequence[str] = ("train",),
    seen_users: Sequence[int] | None = None,
) -> Bundle:
    """A bundle of ``split``'s ``users`` and ``items`` (split indices, in the bundle's own order): structured vectors
    keyed by split index, so the same user/item has the same vector in every bundle; seen lists from ``seen_stages``
    (only for ``seen_users`` when given)."""
    rng = np.random.default_rng(0)
    groups_u, groups_i = np.arange(split.n_users) % 4, np.arange(split.n_items) % 4
    user_vec = rng.normal(0, 0.1, (split.n_users, 8)).astype(np.float32)
    user_vec[np.arange(split.n_users), groups_u] += 1.0
    item_vec = rng.normal(0, 0.1, (split.n_items, 8)).astype(np.float32)
    item_vec[np.arange(split.n_items), groups_i] += 1.0
    users, items = np.asarray(users), np.asarray(items)
    seen = sum(split.matrix(stage) for stage in seen_stages).tocsr()  # type: ignore[union-attr]
    if seen_users is not None:
        keep = np.zeros(split.n_users)
        keep[list(seen_users)] = 1.0
        seen = (sp.diags(keep) @ seen).tocsr()
        seen.eliminate_zeros()  # the bundle's seen lists are the stored entries
    user_table = split.users.set_index("user_idx").loc[users].reset_index()
    user_table["user_idx"] = np.arange(len(users), dtype=np.int32)
    item_table = split.items.set_index("item_idx").loc[items, ["item_id", "title", "year", "categories"]].reset_index()
    item_table["item_idx"] = np.arange(len(items), dtype=np.int32)
    item_table["popularity"] = split.item_popularity[items].astype(np.int64)
    folder = write_bundle(
        out,
        model_kind="mf",
        users=user_table,
        items=item_table,
        user_embeddings=user_vec[users],
        item_embeddings=item_vec[items],
        seen=seen[users][:, items],
        index_config={"kind": "flat", "metric": "ip"},
        dataset="tiny",
        split_hash=split.config_hash if list(users) == sorted(users) and list(items) == sorted(items) else "other",
    )
    return Bundle.load(folder)


def test_the_score_is_the_offline_evaluation_of_the_served_pipeline(split: PreparedSplit, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b", split, range(30), range(40))
    mine = score_bundle(bundle, build_holdout(split), (5, 10))
    (reference,) = evaluate_bundle(bundle.root, split, "test", (5, 10))
    assert mine.n_users == reference.result.n_users_evaluated == 30
    for name, value in reference.result.metrics.items():
        assert mine.metrics[name] == pytest.approx(value, abs=1e-12), name
    assert (mine.cold_users, mine.unknown_items, mine.stages) == (0, 0, {"retrieval": 30})


def test_bundles_are_matched_by_id_not_by_index(split: PreparedSplit, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    holdout = build_holdout(split)
    plain = score_bundle(make_bundle(tmp_path / "plain", split, range(30), range(40)), holdout)
    shuffled = make_bundle(tmp_path / "shuffled", split, rng.permutation(30), rng.permutation(40))
    assert shuffled.user_index["u0"] != 0 or shuffled.item_index["i0"] != 0
    assert score_bundle(shuffled, holdout).metrics == pytest.approx(plain.metrics, abs=1e-12)


def test_unknown_users_are_answered_as_the_service_would_and_unknown_items_count_against(
    split: PreparedSplit, tmp_path: Path
) -> None:
    older = make_bundle(tmp_path / "older", split, range(20), range(30))  # 10 users and 10 items newer than it
    score = score_bundle(older, build_holdout(split))
    new_items = int((split.test["item_idx"] >= 30).sum())
    assert (score.n_users, score.cold_users, score.unknown_items) == (30, 10, new_items) and new_items > 0
    # Cold users have recent activity (their history before the hold-out): fold-in retrieval, not popularity.
    assert score.stages == {"retrieval": 30}
    full = score_bundle(make_bundle(tmp_path / "full", split, range(30), range(40)), build_holdout(split))
    assert score.metrics["recall@10"] <= full.metrics["recall@10"]


def test_the_holdout_leaves_out_what_the_serving_bundle_has_seen(split: PreparedSplit, tmp_path: Path) -> None:
    stages = ("train", "valid", "test")
    partly = make_bundle(tmp_path / "partly", split, range(30), range(40), stages, seen_users=range(10))
    holdout = build_holdout(split, serving=partly)
    seen_pairs = int((split.test["user_idx"] < 10).sum())
    assert holdout.dropped == seen_pairs and holdout.n_interactions == len(split.test) - seen_pairs
    assert holdout.users.min() >= 10 and len(holdout.users) == 20
    everything = make_bundle(tmp_path / "all", split, range(30), range(40), stages)
    stale = build_holdout(split, serving=everything)
    assert (len(stale.users), stale.dropped) == (0, len(split.test))
    with pytest.raises(ValueError, match="no user to evaluate"):
        score_bundle(everything, stale)


def test_a_user_sample_is_seeded(split: PreparedSplit) -> None:
    a, b = build_holdout(split, max_users=7, seed=1), build_holdout(split, max_users=7, seed=1)
    assert len(a.users) == 7 and np.array_equal(a.users, b.users) and set(a.recent) == set(a.users.tolist())
    assert all(len(events) <= 9 for events in a.recent.values())  # train + valid of the tiny split: 9 per user
