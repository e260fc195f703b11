"""EASE: the closed form against dense numpy and a per-column ridge regression, the memory bound, the pruned variant,
the Recommender contract through recstack-train / recstack-evaluate's paths, and a quality floor on ML-100K."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate
from recstack.models.ease import EASE, ease_fit_bytes, ease_weights, max_items_for, prune_columns

# 6 users x 5 items, written by hand: items 0-1 and 3-4 co-occur, item 2 goes with both groups.
HAND = np.array(
    [
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1],
        [0, 0, 0, 1, 1],
        [1, 0, 0, 1, 1],
    ],
    dtype=np.float64,
)


def dense_ease(x: np.ndarray, l2: float) -> np.ndarray:
    """Steck's closed form, written directly in dense numpy."""
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b


def ridge_columns(x: np.ndarray, l2: float) -> np.ndarray:
    """The problem EASE solves, column by column: item j regressed on the other items with an L2 penalty."""
    n = x.shape[1]
    b = np.zeros((n, n))
    for j in range(n):
        others = [i for i in range(n) if i != j]
        a = x[:, others]
        b[others, j] = np.linalg.solve(a.T @ a + l2 * np.eye(n - 1), a.T @ x[:, j])
    return b


@pytest.mark.parametrize("l2", [0.5, 3.0, 50.0])
def test_weights_match_dense_numpy_and_the_per_column_regression(l2: float) -> None:
    got = ease_weights(sp.csr_matrix(HAND, dtype=np.float32), l2)
    assert got.dtype == np.float64 and got.shape == (5, 5)
    np.testing.assert_array_equal(np.diag(got), 0.0)
    np.testing.assert_allclose(got, dense_ease(HAND, l2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, ridge_columns(HAND, l2), rtol=1e-8, atol=1e-10)


def test_weights_match_dense_numpy_across_gram_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import recstack.models.ease as ease

    rng = np.random.default_rng(0)
    x = (rng.random((80, 37)) < 0.2).astype(np.float64)
    want = dense_ease(x, 10.0)
    for block in (1, 5, 1024):  # the Gram matrix is built in column blocks; the result must not depend on their size
        monkeypatch.setattr(ease, "_BLOCK", block)
        np.testing.assert_allclose(ease_weights(sp.csr_matrix(x), 10.0), want, rtol=1e-10, atol=1e-12)


def test_fit_and_score_through_the_contract(tiny_split: PreparedSplit) -> None:
    model = EASE(tiny_split.n_users, tiny_split.n_items, l2=20.0).fit(tiny_split)
    x = tiny_split.matrix("train").toarray().astype(np.float64)
    b = dense_ease(x, 20.0)
    assert isinstance(model.weights, np.ndarray) and model.weights.dtype == np.float32
    np.testing.assert_array_equal(np.diag(model.weights), 0.0)

    users = torch.tensor([0, 3, 7])
    scores = model.score_all(users)
    assert scores.shape == (3, tiny_split.n_items) and scores.dtype == torch.float32
    np.testing.assert_allclose(scores.numpy(), x[[0, 3, 7]] @ b, rtol=1e-4, atol=1e-5)
    items = torch.tensor([1, 2, 5])
    torch.testing.assert_close(model.score(users, items), scores[torch.arange(3), items])

    # The base class's recommend never returns an excluded (seen) item; the evaluator masks the same way.
    seen = torch.from_numpy(x[users.numpy()] > 0)
    _, top = model.recommend(users, 10, exclude=seen)
    assert not seen.gather(1, top).any()
    assert 0 < evaluate(model, tiny_split, "valid").metrics["ndcg@10"] <= 1


def test_refuses_a_catalogue_beyond_the_memory_bound_before_any_work() -> None:
    assert ease_fit_bytes(1000) == 16 * 1000 * 1000
    bound = max_items_for(8.0)
    assert 20_000 < bound < 25_000 and ease_fit_bytes(bound) <= 8e9 < ease_fit_bytes(bound + 1)
    with pytest.raises(ValueError, match=r"50,000 items needs about 40\.0 GB.*max_memory_gb=8"):
        EASE(10, 50_000)
    with pytest.raises(ValueError, match=r"max_memory_gb=0\.001"):
        EASE(10, 1000, max_memory_gb=0.001)
    EASE(10, 50_000, max_memory_gb=64)  # allowed when asked for: the constructor allocates nothing


def test_refuses_bad_arguments_and_unfitted_use(tiny_split: PreparedSplit) -> None:
    with pytest.raises(ValueError, match="l2"):
        EASE(3, 3, l2=0.0)
    with pytest.raises(ValueError, match="top_k"):
        EASE(3, 3, top_k=0)
    with pytest.raises(ValueError, match="built for"):
        EASE(tiny_split.n_users + 1, tiny_split.n_items).fit(tiny_split)
    with pytest.raises(RuntimeError, match="fit"):
        EASE(tiny_split.n_users, tiny_split.n_items).score_all(torch.arange(2))


def test_prune_columns_keeps_each_columns_largest_magnitudes(monkeypatch: pytest.MonkeyPatch) -> None:
    import recstack.models.ease as ease

    rng = np.random.default_rng(1)
    w = rng.normal(size=(30, 12))  # real values: no ties
    for block in (1, 4, 1024):  # columns are pruned in blocks
        monkeypatch.setattr(ease, "_BLOCK", block)
        got = prune_columns(w, 5).toarray()
        want = np.zeros_like(w)
        for j in range(w.shape[1]):
            top = np.argsort(-np.abs(w[:, j]))[:5]
            want[top, j] = w[top, j]
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert got.dtype == np.float32 and (np.count_nonzero(got, axis=0) == 5).all()


def test_pruned_model_scores_with_the_sparse_weights(tiny_split: PreparedSplit) -> None:
    n = tiny_split.n_items
    dense = EASE(tiny_split.n_users, n, l2=20.0).fit(tiny_split)
    users = torch.arange(tiny_split.n_users)
    full = EASE(tiny_split.n_users, n, l2=20.0, top_k=n).fit(tiny_split)  # nothing pruned but the zero diagonal
    assert sp.issparse(full.weights)
    torch.testing.assert_close(full.score_all(users), dense.score_all(users), rtol=1e-5, atol=1e-6)

    pruned = EASE(tiny_split.n_users, n, l2=20.0, top_k=4).fit(tiny_split)
    assert sp.issparse(pruned.weights) and (np.diff(pruned.weights.tocsc().indptr) <= 4).all()
    x = tiny_split.matrix("train").toarray()
    np.testing.assert_allclose(pruned.score_all(users).numpy(), x @ pruned.weights.toarray(), rtol=1e-5, atol=1e-6)


def test_recstack_train_and_evaluate_fit_it_like_the_other_baselines(tiny_split: PreparedSplit, tmp_path: Path) -> None:
    from recstack.cli.evaluate import fit_baseline
    from recstack.training.train import train

    overrides = [f"runs_root={tmp_path / 'runs'}", f"text_cache_dir={tmp_path / 'text'}", "progress=false"]
    result = train(compose("train", [*overrides, "model=ease", "model.l2=20"]), split=tiny_split)
    assert isinstance(result.model, EASE) and result.model.l2 == 20
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["valid"]["ndcg@10"] > 0 and metrics["test"]["ndcg@10"] > 0 and metrics["epochs"] == 1

    tuning = train(compose("train", [*overrides, "model=ease", "evaluate_test=false"]), split=tiny_split)
    assert tuning.metrics["test"] is None  # tuning never reads the test split

    model, seconds = fit_baseline("ease", tiny_split)  # recstack-evaluate models=[ease]
    assert isinstance(model, EASE) and seconds >= 0


def test_ease_reaches_its_floor_on_ml100k(ml100k_split: PreparedSplit) -> None:
    """configs/model/ease.yaml's l2 (300, chosen on valid) scores test NDCG@10 0.3196 on the default split."""
    from recstack.cli.evaluate import fit_baseline

    model, _ = fit_baseline("ease", ml100k_split)
    assert model.l2 == 300
    assert evaluate(model, ml100k_split, "valid").metrics["ndcg@10"] >= 0.27
    assert evaluate(model, ml100k_split, "test").metrics["ndcg@10"] >= 0.31
