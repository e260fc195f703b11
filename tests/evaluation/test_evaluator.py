"""The full-ranking evaluator on small hand-made and random splits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from eval_helpers import DotModel, TableModel, make_split, random_split

from recstack.evaluation.evaluator import EvaluationResult, evaluate, evaluate_topk
from recstack.models.base import Recommender


class ExpandedModel(Recommender):
    """Returns a broadcast view of one shared score row, as a popularity model might."""

    def __init__(self, row: np.ndarray, n_users: int) -> None:
        self.row = torch.as_tensor(row, dtype=torch.float32)
        self.n_users, self.n_items = n_users, len(row)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.row.expand(len(users), -1)


def hand_split():
    # 3 users, 5 items. User 2 has no test item.
    train = [(0, 0), (1, 1), (2, 2)]
    valid = [(0, 1), (1, 0), (2, 3)]
    test = [(0, 2), (0, 4), (1, 3)]
    return make_split(train, valid, test, n_users=3, n_items=5)


def test_train_and_valid_items_are_masked_and_metrics_are_right_by_hand() -> None:
    split = hand_split()
    # Everyone prefers items in the order 0 > 1 > 2 > 3 > 4.
    model = TableModel(np.tile([5.0, 4.0, 3.0, 2.0, 1.0], (3, 1)))
    res = evaluate(model, split, "test", ks=(1, 3), keep_per_user=True)
    assert res.n_users_evaluated == 2 and res.n_users_skipped == 1
    per = res.per_user
    assert per is not None
    np.testing.assert_array_equal(per.users, [0, 1])
    # User 0: train 0 and valid 1 masked -> [2, 3, 4]; user 1: train 1, valid 0 masked -> [2, 3, 4].
    np.testing.assert_array_equal(per.topk, [[2, 3, 4], [2, 3, 4]])
    np.testing.assert_array_equal(per.hits, [[True, False, True], [False, True, False]])
    assert res.metrics["precision@1"] == pytest.approx(0.5)
    assert res.metrics["recall@3"] == pytest.approx((2 / 2 + 1 / 1) / 2)
    ndcg0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    ndcg1 = (1 / math.log2(3)) / 1
    assert res.metrics["ndcg@3"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert res.metrics["map@3"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 2)
    assert res.metrics["mrr@3"] == pytest.approx((1 + 1 / 2) / 2)
    assert res.metrics["hit@1"] == pytest.approx(0.5)
    assert res.metrics["coverage@3"] == pytest.approx(3 / 5)
    assert res["coverage@1"] == pytest.approx(1 / 5)
    # On valid only train is masked: user 0 gets [1, 2, 3], and user 2 (valid item 3) is evaluated.
    res_v = evaluate(model, split, "valid", ks=(3,), keep_per_user=True)
    assert res_v.n_users_evaluated == 3 and res_v.n_users_skipped == 0
    np.testing.assert_array_equal(res_v.per_user.topk[0], [1, 2, 3])


def test_metric_names_and_result_shape() -> None:
    split = random_split(20, 30)
    res = evaluate(DotModel(20, 30), split, "valid", ks=(5, 10))
    assert isinstance(res, EvaluationResult) and res.ks == (5, 10) and res.stage == "valid"
    for k in (5, 10):
        for name in ("precision", "recall", "ndcg", "map", "hit", "mrr", "coverage", "avg_pop", "novelty"):
            assert f"{name}@{k}" in res.metrics
    assert res.per_user is None


def test_k_larger_than_catalogue_is_a_clear_error() -> None:
    split = hand_split()
    with pytest.raises(ValueError, match="larger than the catalogue"):
        evaluate(TableModel(np.zeros((3, 5))), split, "test", ks=(10,))
    with pytest.raises(ValueError, match=">= 1"):
        evaluate(TableModel(np.zeros((3, 5))), split, "test", ks=(0,))


def test_fewer_unseen_items_than_k_leaves_empty_slots() -> None:
    split = hand_split()
    res = evaluate(TableModel(np.random.default_rng(0).random((3, 5))), split, "test", ks=(5,), keep_per_user=True)
    # Each user has 2 seen items (train + valid): 3 left, 2 empty slots.
    assert (res.per_user.topk[:, 3:] == -1).all() and (res.per_user.topk[:, :3] >= 0).all()
    assert res.metrics["recall@5"] == pytest.approx(1.0)
    assert res.metrics["precision@5"] == pytest.approx((2 / 5 + 1 / 5) / 2)


def test_mismatched_id_spaces_are_refused() -> None:
    split = random_split(20, 30)
    with pytest.raises(ValueError, match="n_items=31 but the split has n_items=30"):
        evaluate(DotModel(20, 31), split)
    with pytest.raises(ValueError, match="n_users=19"):
        evaluate(DotModel(19, 30), split)


def test_stage_must_be_valid_or_test() -> None:
    with pytest.raises(ValueError, match="'valid' or 'test'"):
        evaluate(DotModel(20, 30), random_split(20, 30), "train")  # type: ignore[arg-type]


def test_no_user_with_relevant_items_is_a_clear_error() -> None:
    split = make_split([(0, 0)], [], [], n_users=2, n_items=3)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(TableModel(np.zeros((2, 3))), split, "test", ks=(1,))


def test_chunking_gives_identical_results() -> None:
    split = random_split(97, 53, per_user=20, seed=3)
    model = DotModel(97, 53, seed=1)
    whole = evaluate(model, split, "test", ks=(1, 5, 20), keep_per_user=True)
    # 53 items * 12 bytes * 7 users per chunk: 14 chunks, the last one short.
    chunked = evaluate(model, split, "test", ks=(1, 5, 20), keep_per_user=True, max_memory_bytes=53 * 12 * 7)
    assert whole.metrics == chunked.metrics
    np.testing.assert_array_equal(whole.per_user.topk, chunked.per_user.topk)
    one = evaluate(model, split, "test", ks=(1, 5, 20), max_memory_bytes=1)
    assert one.metrics == whole.metrics


def test_evaluate_topk_equals_evaluate_for_the_same_lists() -> None:
    split = random_split(40, 50, per_user=15, seed=5)
    res = evaluate(DotModel(40, 50), split, "test", ks=(3, 10), keep_per_user=True)
    again = evaluate_topk(res.per_user.topk, res.per_user.users, split, "test", ks=(3, 10), keep_per_user=True)
    assert again.metrics == res.metrics
    for name, values in res.per_user.metrics.items():
        np.testing.assert_array_equal(values, again.per_user.metrics[name])


def test_evaluate_topk_skips_and_counts_users_without_relevant_items() -> None:
    split = hand_split()
    topk = np.array([[2, 4], [3, 2], [0, 1]])
    res = evaluate_topk(topk, np.array([0, 1, 2]), split, "test", ks=(2,))
    assert res.n_users_evaluated == 2 and res.n_users_skipped == 1
    assert res.metrics["hit@2"] == 1.0 and res.metrics["recall@2"] == 1.0


def test_evaluate_topk_refuses_bad_input() -> None:
    split = hand_split()
    with pytest.raises(ValueError, match="longer than the ranked lists"):
        evaluate_topk(np.array([[1, 2]]), np.array([0]), split, "test", ks=(3,))
    with pytest.raises(ValueError, match="item indices"):
        evaluate_topk(np.array([[1, 9]]), np.array([0]), split, "test", ks=(2,))
    with pytest.raises(ValueError, match="user indices"):
        evaluate_topk(np.array([[1, 2]]), np.array([5]), split, "test", ks=(2,))
    with pytest.raises(ValueError, match="repeats an item"):
        evaluate_topk(np.array([[1, 1, -1], [2, -1, -1]]), np.array([0, 1]), split, "test", ks=(3,))
    with pytest.raises(ValueError, match="same length"):
        evaluate_topk(np.array([[1, 2]]), np.array([0, 1]), split, "test", ks=(2,))


def test_evaluator_never_writes_into_the_models_tensors() -> None:
    split = hand_split()
    row = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    model = ExpandedModel(row, 3)
    res = evaluate(model, split, "test", ks=(3,), keep_per_user=True)
    np.testing.assert_array_equal(res.per_user.topk, [[2, 3, 4], [2, 3, 4]])
    np.testing.assert_array_equal(model.row.numpy(), row)


def test_nn_module_models_are_scored_in_eval_mode_and_restored() -> None:
    class Dropper(torch.nn.Module, Recommender):
        def __init__(self) -> None:
            super().__init__()
            self.n_users, self.n_items = 3, 5
            self.weight = torch.nn.Parameter(torch.arange(5, 0, -1, dtype=torch.float32))
            self.modes: list[bool] = []

        def score_all(self, users: torch.Tensor) -> torch.Tensor:
            self.modes.append(self.training)
            return self.weight.repeat(len(users), 1)

    model = Dropper()
    model.train()
    evaluate(model, hand_split(), "test", ks=(2,))
    assert model.modes == [False] and model.training


def test_hits_and_lists_match_a_brute_force_ranking() -> None:
    split = random_split(30, 25, per_user=10, seed=11)
    model = DotModel(30, 25, seed=2)
    res = evaluate(model, split, "test", ks=(4,), keep_per_user=True)
    scores = (model.users @ model.items.T).numpy()
    seen = split.matrix("train").toarray() + split.matrix("valid").toarray()
    relevant = split.matrix("test").toarray() > 0
    for row, u in enumerate(res.per_user.users):
        order = [i for i in np.argsort(-scores[u], kind="stable") if not seen[u, i]][:4]
        np.testing.assert_array_equal(res.per_user.topk[row], order)
        np.testing.assert_array_equal(res.per_user.hits[row], relevant[u, order])


@pytest.mark.parametrize(
    ("n_rows", "n_cols", "k"), [(7, 5000, 50), (3, 1003, 10), (5, 64, 64), (4, 20000, 1), (2, 999, 3)]
)
def test_folded_top_k_equals_torch_topk(n_rows: int, n_cols: int, k: int) -> None:
    from recstack.evaluation.evaluator import top_k

    g = torch.Generator().manual_seed(n_cols)
    scores = torch.randn(n_rows, n_cols, generator=g)
    scores[0, : n_cols // 2] = float("-inf")  # a row mostly masked
    scores[1] = torch.randint(0, 3, (n_cols,), generator=g).float()  # heavy ties: values must still agree
    values, items = top_k(scores, k)
    want_values, want_items = torch.topk(scores, k, dim=1)
    torch.testing.assert_close(values, want_values)
    torch.testing.assert_close(torch.gather(scores, 1, items), want_values)
    assert all(len(set(row.tolist())) == k for row in items)
    rows = [r for r in range(n_rows) if r != 1]
    torch.testing.assert_close(items[rows], want_items[rows])


def test_a_user_sample_scores_those_users_exactly_as_the_whole_run_does() -> None:
    split = random_split(60, 40, per_user=12, seed=2)
    model = DotModel(60, 40, seed=4)
    whole = evaluate(model, split, "test", ks=(5,), keep_per_user=True)
    chosen = np.array([50, 3, 17, 3, 29])  # unsorted, one repeat
    sample = evaluate(model, split, "test", ks=(5,), keep_per_user=True, users=chosen)
    np.testing.assert_array_equal(sample.per_user.users, [3, 17, 29, 50])
    rows = np.searchsorted(whole.per_user.users, [3, 17, 29, 50])
    np.testing.assert_array_equal(sample.per_user.topk, whole.per_user.topk[rows])
    assert sample.metrics["ndcg@5"] == pytest.approx(whole.per_user.metrics["ndcg@5"][rows].mean())
    assert sample.n_users_evaluated == 4 and sample.n_users_skipped == 0


def test_a_user_sample_counts_users_without_relevant_items_and_refuses_bad_indices() -> None:
    split = hand_split()
    res = evaluate(TableModel(np.zeros((split.n_users, split.n_items))), split, "test", ks=(1,), users=[0, 1, 2])
    assert res.n_users_evaluated == 2 and res.n_users_skipped == 1  # user 2 has no test item
    with pytest.raises(ValueError, match="outside the split's"):
        evaluate(DotModel(split.n_users, split.n_items), split, "test", ks=(1,), users=[split.n_users])
    with pytest.raises(ValueError, match="among the 0 chosen users"):
        evaluate(DotModel(split.n_users, split.n_items), split, "test", ks=(1,), users=[])
