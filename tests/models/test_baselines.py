"""Popularity, ItemKNN and UserKNN: the sparse similarity against dense brute force, and quality floors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate
from recstack.models.base import Recommender
from recstack.models.item_knn import ItemKNN, top_n_similarity
from recstack.models.popularity import Popularity
from recstack.models.user_knn import UserKNN


class RandomScores(Recommender):
    def __init__(self, n_users: int, n_items: int, seed: int) -> None:
        self.n_users, self.n_items = n_users, n_items
        self.table = torch.rand(n_users, n_items, generator=torch.Generator().manual_seed(seed))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.table[users]


def random_ndcg(split: PreparedSplit, stage: str = "valid", seeds: int = 20) -> float:
    return float(
        np.mean(
            [
                evaluate(RandomScores(split.n_users, split.n_items, s), split, stage).metrics["ndcg@10"]
                for s in range(seeds)
            ]
        )
    )


def dense_top_n(x: np.ndarray, k: int, similarity: str, shrink: float) -> np.ndarray:
    """Brute force: full similarity, self removed, top-k per row, positives only."""
    if similarity == "pearson":
        x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1)
    denom = np.outer(norms, norms) + shrink
    sim = np.divide(x @ x.T, denom, out=np.zeros((len(x), len(x))), where=denom > 0)
    np.fill_diagonal(sim, 0.0)
    out = np.zeros_like(sim)
    for r in range(len(sim)):
        top = np.argsort(-sim[r], kind="stable")[:k]
        out[r, top] = np.where(sim[r, top] > 0, sim[r, top], 0.0)
    return out


@pytest.mark.parametrize("similarity", ["cosine", "pearson"])
@pytest.mark.parametrize("shrink", [0.0, 5.0])
def test_top_n_similarity_matches_dense_brute_force_in_any_block_size(similarity: str, shrink: float) -> None:
    rng = np.random.default_rng(0)
    # Real-valued entries avoid ties, so the top-k sets are unique.
    x = (rng.random((37, 23)) < 0.3) * rng.random((37, 23))
    want = dense_top_n(x, 5, similarity, shrink)
    for block_bytes in (1, 37 * 4 * 4 * 6, 1 << 30):
        got = top_n_similarity(sp.csr_matrix(x), 5, similarity, shrink, block_bytes=block_bytes).toarray()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert (np.count_nonzero(got, axis=1) <= 5).all() and np.all(np.diag(got) == 0)


def test_top_n_similarity_refuses_bad_arguments() -> None:
    x = sp.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match="k_neighbors"):
        top_n_similarity(x, 0)
    with pytest.raises(ValueError, match="similarity"):
        top_n_similarity(x, 2, "jaccard")  # type: ignore[arg-type]


def test_popularity_ranks_by_training_users_and_beats_random(tmp_path) -> None:
    # Skewed popularity: item i is chosen with probability ~ 1 / (i + 1).
    from recstack.data.prepared import FORMAT_VERSION

    rng = np.random.default_rng(1)
    n_users, n_items = 60, 50
    p = 1.0 / np.arange(1, n_items + 1)
    p /= p.sum()
    rows = [(u, int(i)) for u in range(n_users) for i in rng.choice(n_items, 12, replace=False, p=p)]
    import pandas as pd

    def frame(pairs):
        arr = np.array(pairs, dtype=np.int32)
        return pd.DataFrame(
            {
                "user_id": arr[:, 0].astype(str),
                "item_id": arr[:, 1].astype(str),
                "user_idx": arr[:, 0],
                "item_idx": arr[:, 1],
                "timestamp": np.zeros(len(arr), np.int64),
                "value": np.ones(len(arr), np.float32),
                "event_type": "click",
            }
        )

    train = [r for j, r in enumerate(rows) if j % 12 < 10]
    valid = [r for j, r in enumerate(rows) if j % 12 == 10]
    test = [r for j, r in enumerate(rows) if j % 12 == 11]
    manifest = {
        "format_version": FORMAT_VERSION,
        "dataset": "skewed",
        "config_hash": "x",
        "n_users": n_users,
        "n_items": n_items,
    }
    split = PreparedSplit(tmp_path, manifest, frame(train), frame(valid), frame(test), pd.DataFrame(), pd.DataFrame())
    model = Popularity(n_users, n_items).fit(split)
    scores = model.score_all(torch.tensor([0, 5]))
    assert scores.shape == (2, n_items) and scores.dtype == torch.float32
    counts = np.bincount([i for _, i in train], minlength=n_items)
    np.testing.assert_array_equal(model.popularity, counts)
    # Ranked by count, ties by lower index, the same for every user.
    want_order = sorted(range(n_items), key=lambda i: (-counts[i], i))
    np.testing.assert_array_equal(torch.argsort(scores[0], descending=True).numpy(), want_order)
    assert torch.equal(scores[0], scores[1])
    assert evaluate(model, split, "valid").metrics["ndcg@10"] > 1.5 * random_ndcg(split)


@pytest.mark.parametrize(
    "build",
    [
        lambda n, m: ItemKNN(n, m, k_neighbors=10),
        lambda n, m: UserKNN(n, m, k_neighbors=10),
        lambda n, m: UserKNN(n, m, k_neighbors=10, similarity="pearson"),
    ],
    ids=["itemknn", "userknn-cosine", "userknn-pearson"],
)
def test_knn_baselines_beat_random_on_tiny_data(tiny_split: PreparedSplit, build) -> None:
    model = build(tiny_split.n_users, tiny_split.n_items).fit(tiny_split)
    scores = model.score_all(torch.arange(5))
    assert scores.shape == (5, tiny_split.n_items) and scores.dtype == torch.float32
    mine = np.mean([evaluate(model, tiny_split, s).metrics["ndcg@10"] for s in ("valid", "test")])
    chance = np.mean([random_ndcg(tiny_split, s) for s in ("valid", "test")])
    assert mine > 1.5 * chance


def test_user_knn_scores_are_neighbours_items_weighted_by_similarity(tiny_split: PreparedSplit) -> None:
    model = UserKNN(tiny_split.n_users, tiny_split.n_items, k_neighbors=3).fit(tiny_split)
    x = tiny_split.matrix("train").toarray()
    w = model.neighbours.toarray()
    assert (np.count_nonzero(w, axis=1) <= 3).all()
    np.testing.assert_allclose(model.score_all(torch.tensor([4])).numpy()[0], w[4] @ x, rtol=1e-5)


def test_baselines_refuse_wrong_shapes_and_unfitted_use(tiny_split: PreparedSplit) -> None:
    for cls in (Popularity, ItemKNN, UserKNN):
        with pytest.raises(ValueError, match="built for"):
            cls(tiny_split.n_users + 1, tiny_split.n_items).fit(tiny_split)
        with pytest.raises(RuntimeError, match="fit"):
            cls(tiny_split.n_users, tiny_split.n_items).score_all(torch.arange(2))
    with pytest.raises(ValueError, match="similarity"):
        UserKNN(3, 3, similarity="jaccard")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "floor"),
    [("pop", 0.12), ("itemknn", 0.20), ("userknn", 0.235)],
)
def test_baselines_reach_their_floor_on_ml100k_valid(ml100k_split: PreparedSplit, name: str, floor: float) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from recstack.config import config_dir

    model_cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
    model = instantiate(model_cfg, n_users=ml100k_split.n_users, n_items=ml100k_split.n_items).fit(ml100k_split)
    assert evaluate(model, ml100k_split, "valid").metrics["ndcg@10"] >= floor
