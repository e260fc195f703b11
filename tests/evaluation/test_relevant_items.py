"""The evaluator restricted to a subset of items (``relevant_items``, e.g. the cold items of split=new_items): ground
truth and evaluated users change, ranking stays over the full catalogue; evaluate and evaluate_topk agree."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eval_helpers import DotModel, TableModel, make_split, random_split

from recstack.evaluation.evaluator import evaluate, evaluate_topk, relevant_matrix, untrained_items


def cold_split():
    # 3 users, 6 items; items 4 and 5 never appear in train (the "cold" ones).
    train = [(0, 0), (1, 1), (2, 2), (2, 3)]
    valid = [(0, 4), (0, 1), (1, 5), (1, 4), (2, 0)]
    test = [(0, 2)]
    return make_split(train, valid, test, n_users=3, n_items=6)


def test_only_the_given_items_are_relevant_and_users_without_them_are_skipped() -> None:
    split = cold_split()
    np.testing.assert_array_equal(untrained_items(split), [4, 5])
    model = TableModel(np.tile([6.0, 5.0, 4.0, 3.0, 2.0, 1.0], (3, 1)))  # everyone: 0 > 1 > ... > 5
    full = evaluate(model, split, "valid", ks=(2, 4), keep_per_user=True)
    cold = evaluate(model, split, "valid", ks=(2, 4), keep_per_user=True, relevant_items=untrained_items(split))
    assert (full.n_users_evaluated, cold.n_users_evaluated, cold.n_users_skipped) == (3, 2, 1)  # user 2: no cold item
    # Ranking is unchanged (the full catalogue, train masked): user 0 -> [1, 2, 3, 4], user 1 -> [0, 2, 3, 4].
    np.testing.assert_array_equal(cold.per_user.topk, [[1, 2, 3, 4], [0, 2, 3, 4]])
    np.testing.assert_array_equal(cold.per_user.topk, full.per_user.topk[:2])
    # ... but only items 4 and 5 count: user 0 hits item 4 at rank 4 (its valid item 1 no longer counts).
    np.testing.assert_array_equal(cold.per_user.n_relevant, [1, 2])
    np.testing.assert_array_equal(cold.per_user.hits, [[False, False, False, True], [False, False, False, True]])
    assert cold.metrics["recall@2"] == 0.0 and cold.metrics["hit@4"] == 1.0
    assert cold.metrics["recall@4"] == pytest.approx((1 / 1 + 1 / 2) / 2)
    hit_at_4 = 1 / math.log2(4 + 1)
    ideal_1 = 1 / math.log2(1 + 1) + 1 / math.log2(2 + 1)  # user 1 has two relevant items
    assert cold.metrics["ndcg@4"] == pytest.approx((hit_at_4 / 1.0 + hit_at_4 / ideal_1) / 2)
    assert full.metrics["recall@2"] > 0  # the same lists score without the restriction
    # None and the whole catalogue are the same thing.
    everything = evaluate(model, split, "valid", ks=(2, 4), relevant_items=np.arange(6))
    assert everything.metrics == full.metrics


def test_evaluate_topk_agrees_with_evaluate_on_a_subset() -> None:
    split = random_split(40, 60, seed=3)
    subset = np.arange(0, 60, 3)
    model = DotModel(40, 60)
    scored = evaluate(model, split, "test", ks=(5, 10), keep_per_user=True)
    restricted = evaluate(model, split, "test", ks=(5, 10), relevant_items=subset)
    lists = evaluate_topk(scored.per_user.topk, scored.per_user.users, split, "test", (5, 10), relevant_items=subset)
    assert lists.metrics == pytest.approx(restricted.metrics)
    assert lists.n_users_evaluated == restricted.n_users_evaluated < scored.n_users_evaluated
    assert lists.n_users_skipped == restricted.n_users_skipped - (40 - scored.n_users_evaluated)


def test_bad_subsets_are_clear_errors() -> None:
    split = cold_split()
    model = TableModel(np.zeros((3, 6)))
    with pytest.raises(ValueError, match=r"item indices in \[0, 6\)"):
        evaluate(model, split, "valid", ks=(2,), relevant_items=[4, 6])
    with pytest.raises(ValueError, match="1-D sequence of item indices"):
        evaluate(model, split, "valid", ks=(2,), relevant_items=np.ones(6, dtype=bool))
    with pytest.raises(ValueError, match="with one of the 1 relevant_items"):
        evaluate(model, split, "test", ks=(2,), relevant_items=[5])  # no test pair with item 5
    with pytest.raises(ValueError, match="with one of the 0 relevant_items"):
        evaluate_topk(np.array([[1, 2]]), np.array([0]), split, "valid", ks=(2,), relevant_items=[])
    assert relevant_matrix(split, "valid", [4]).nnz == 2 and relevant_matrix(split, "valid").nnz == 5
