"""The metric functions against a slow, loop-by-loop reference written from RecBole 1.2's definitions, and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recstack.evaluation import metrics as M


def reference(name: str, ranked: list[int], relevant: set[int], k: int) -> float:
    """One user's metric, written as plainly as possible."""
    top = ranked[:k]
    hit_flags = [item in relevant for item in top] + [False] * (k - len(top))
    n_hits = sum(hit_flags)
    if name == "precision":
        return n_hits / k
    if name == "recall":
        return n_hits / len(relevant)
    if name == "hit":
        return 1.0 if n_hits else 0.0
    if name == "mrr":
        for i, flag in enumerate(hit_flags):
            if flag:
                return 1.0 / (i + 1)
        return 0.0
    if name == "ndcg":
        dcg = sum(1.0 / math.log2(i + 2) for i, flag in enumerate(hit_flags) if flag)
        idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
        return dcg / idcg
    if name == "map":
        total, seen = 0.0, 0
        for i, flag in enumerate(hit_flags):
            if flag:
                seen += 1
                total += seen / (i + 1)
        return total / min(len(relevant), k)
    raise KeyError(name)


@pytest.mark.parametrize("name", sorted(M.RANKING_METRICS))
def test_ranking_metrics_match_the_slow_reference_on_random_lists(name: str) -> None:
    rng = np.random.default_rng(7)
    n_users, n_items, max_k = 200, 60, 25
    ranked = np.stack([rng.permutation(n_items)[:max_k] for _ in range(n_users)])
    relevant = [set(rng.choice(n_items, size=rng.integers(1, 40), replace=False).tolist()) for _ in range(n_users)]
    hits = np.array([[item in rel for item in row] for row, rel in zip(ranked, relevant)])
    n_relevant = np.array([len(r) for r in relevant])
    for k in (1, 3, 10, 25):
        got = M.RANKING_METRICS[name](hits, n_relevant, k)
        want = [reference(name, row.tolist(), rel, k) for row, rel in zip(ranked, relevant)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_hand_computed_user_with_more_relevant_items_than_k() -> None:
    # 5 relevant items, K = 3, hits at ranks 1 and 3: normalisers use min(|R|, K) = 3.
    hits = np.array([[True, False, True]])
    n_rel = np.array([5])
    assert M.precision(hits, n_rel, 3)[0] == pytest.approx(2 / 3)
    assert M.recall(hits, n_rel, 3)[0] == pytest.approx(2 / 5)
    assert M.map_(hits, n_rel, 3)[0] == pytest.approx((1 / 1 + 2 / 3) / 3)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert M.ndcg(hits, n_rel, 3)[0] == pytest.approx((1 + 1 / math.log2(4)) / idcg)
    assert M.hit(hits, n_rel, 3)[0] == 1.0
    assert M.mrr(hits, n_rel, 3)[0] == 1.0


def test_hand_computed_user_with_fewer_relevant_items_than_k() -> None:
    # 1 relevant item found at rank 2 of 4: IDCG and the MAP normaliser use min(|R|, K) = 1.
    hits = np.array([[False, True, False, False]])
    n_rel = np.array([1])
    assert M.ndcg(hits, n_rel, 4)[0] == pytest.approx(1 / math.log2(3))
    assert M.map_(hits, n_rel, 4)[0] == pytest.approx(1 / 2)
    assert M.mrr(hits, n_rel, 4)[0] == pytest.approx(1 / 2)
    assert M.precision(hits, n_rel, 4)[0] == pytest.approx(1 / 4)
    assert M.recall(hits, n_rel, 4)[0] == 1.0
    # At K = 1 the hit is out of reach.
    for fn in M.RANKING_METRICS.values():
        assert fn(hits, n_rel, 1)[0] == 0.0


def test_perfect_list_scores_one_everywhere_but_precision() -> None:
    hits = np.array([[True, True, False]])
    n_rel = np.array([2])
    for name in ("recall", "ndcg", "map", "hit", "mrr"):
        assert M.RANKING_METRICS[name](hits, n_rel, 3)[0] == pytest.approx(1.0)
    assert M.precision(hits, n_rel, 3)[0] == pytest.approx(2 / 3)


def test_bad_k_and_users_without_relevant_items_are_refused() -> None:
    hits = np.zeros((2, 5), dtype=bool)
    with pytest.raises(ValueError, match="between 1 and"):
        M.ndcg(hits, np.array([1, 1]), 6)
    with pytest.raises(ValueError, match="at least one relevant"):
        M.recall(hits, np.array([1, 0]), 5)
    with pytest.raises(ValueError, match="shape"):
        M.precision(hits, np.array([1, 1, 1]), 5)


def test_catalogue_metrics_by_hand() -> None:
    topk = np.array([[0, 1, 2], [0, 3, -1]])
    pop = np.array([10, 4, 2, 0, 7])
    assert M.coverage(topk, n_items=5) == pytest.approx(4 / 5)
    assert M.coverage(topk, n_items=5, k=1) == pytest.approx(1 / 5)
    np.testing.assert_allclose(M.average_popularity(topk, pop), [16 / 3, 10 / 2])
    np.testing.assert_allclose(M.average_popularity(topk, pop, k=1), [10, 10])
    # Self-information with 20 users; the unseen item 3 counts as known to one user.
    nov = M.novelty(topk, pop, n_users=20)
    want0 = np.mean([-math.log2(10 / 20), -math.log2(4 / 20), -math.log2(2 / 20)])
    want1 = np.mean([-math.log2(10 / 20), -math.log2(1 / 20)])
    np.testing.assert_allclose(nov, [want0, want1])
    assert M.novelty(np.array([[-1, -1]]), pop, 20)[0] == 0.0


def test_public_names() -> None:
    assert set(M.RANKING_METRICS) == {"precision", "recall", "ndcg", "map", "hit", "mrr"}
    assert M.map is M.map_
