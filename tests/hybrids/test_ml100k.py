"""Hybrids on the real ML-100K split: a weight of 1 on one part is that part, tuning never loses to a part on
validation, and quality floors on the fixed split (seconds: only fit(split) parts, small grids)."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate
from recstack.hybrids.parts import build_parts
from recstack.hybrids.stacking import StackingHybrid
from recstack.hybrids.weighted import WeightedHybrid
from recstack.models.base import Recommender

PARTS = ["ease", "itemknn", "pop"]


@pytest.fixture(scope="module")
def parts(ml100k_split: PreparedSplit) -> dict[str, Recommender]:
    return build_parts(PARTS, ml100k_split)


def test_weight_one_on_a_part_ranks_as_that_part(ml100k_split: PreparedSplit, parts: dict[str, Recommender]) -> None:
    split = ml100k_split
    only_ease = WeightedHybrid(split.n_users, split.n_items, PARTS, weights={"ease": 1.0}).fit(split, parts=parts)
    for stage in ("valid", "test"):
        mine = evaluate(only_ease, split, stage, (10,), keep_per_user=True)
        theirs = evaluate(parts["ease"], split, stage, (10,), keep_per_user=True)
        assert mine.per_user is not None and theirs.per_user is not None
        assert np.array_equal(mine.per_user.topk, theirs.per_user.topk)
        assert mine.metrics == theirs.metrics


def test_tuned_weights_never_lose_to_a_part_on_valid(
    ml100k_split: PreparedSplit, parts: dict[str, Recommender]
) -> None:
    split = ml100k_split
    hybrid = WeightedHybrid(split.n_users, split.n_items, PARTS, step=0.25).fit(split, parts=parts)
    valid = evaluate(hybrid, split, "valid", (10,)).metrics["ndcg@10"]
    assert valid == pytest.approx(hybrid.tuning["valid/ndcg@10"], abs=1e-6)  # tuning scores as the evaluator does
    for name in PARTS:  # the simplex grid holds each part alone
        assert valid >= evaluate(parts[name], split, "valid", (10,)).metrics["ndcg@10"] - 1e-9
    assert evaluate(hybrid, split, "test", (10,)).metrics["ndcg@10"] >= 0.315  # EASE alone: 0.3196


def test_stacking_quality_floor(ml100k_split: PreparedSplit, parts: dict[str, Recommender]) -> None:
    split = ml100k_split
    stacking = StackingHybrid(
        split.n_users,
        split.n_items,
        PARTS,
        n_candidates=50,
        param_grid=[{"num_leaves": 3, "min_data_in_leaf": 500}],
        iterations=[50, 100],
        folds=2,
        threads=1,
    ).fit(split, parts=parts)
    assert stacking.tuning["valid_positives_in_candidates"] > 0.5
    assert evaluate(stacking, split, "test", (10,)).metrics["ndcg@10"] >= 0.315
