"""Fold-in (``recstack.models.base.FoldsIn``): EASE, ItemKNN, UserKNN and LightGCN read a new interaction matrix at
inference with their trained parameters unchanged; the evaluator folds train + valid in on the test stage only and
restores the model afterwards. Real models on the tiny split."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate, evaluate_topk
from recstack.models.base import FoldsIn, Recommender
from recstack.models.ease import EASE
from recstack.models.item_knn import ItemKNN
from recstack.models.lightgcn import LightGCN
from recstack.models.mf import MatrixFactorization
from recstack.models.popularity import Popularity
from recstack.models.user_knn import UserKNN

KINDS = ("ease", "itemknn", "userknn", "lightgcn")


def build(kind: str, split: PreparedSplit) -> Recommender:
    """A fitted model (LightGCN untrained: its seeded initial embeddings are the trained parameters here)."""
    n, m = split.n_users, split.n_items
    if kind == "ease":
        return EASE(n, m, l2=20.0).fit(split)
    if kind == "itemknn":
        return ItemKNN(n, m, k_neighbors=10).fit(split)
    if kind == "userknn":
        return UserKNN(n, m, k_neighbors=10).fit(split)
    if kind == "lightgcn":
        torch.manual_seed(0)
        return LightGCN(n, m, split.matrix("train"), embedding_dim=8, num_layers=2).eval()
    if kind == "mf":
        torch.manual_seed(0)
        return MatrixFactorization(n, m, embedding_dim=8).eval()
    raise AssertionError(kind)


def all_scores(model: Recommender) -> np.ndarray:
    with torch.no_grad():
        return model.score_all(torch.arange(model.n_users)).numpy().copy()


def train_valid(split: PreparedSplit) -> sp.csr_matrix:
    return (split.matrix("train") + split.matrix("valid")).tocsr()


def some_users_valid(split: PreparedSplit, users: np.ndarray) -> sp.csr_matrix:
    """Train, plus the validation items of ``users`` only."""
    keep = np.zeros(split.n_users, dtype=np.float32)
    keep[users] = 1.0
    return (split.matrix("train") + sp.diags(keep) @ split.matrix("valid")).tocsr()


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory, tiny_split_writer: Callable[..., object]) -> PreparedSplit:
    return PreparedSplit.load(tiny_split_writer(tmp_path_factory.mktemp("split") / "tiny"))  # type: ignore[arg-type]


def test_the_four_fold_in_and_mf_and_popularity_do_not(split: PreparedSplit) -> None:
    for kind in KINDS:
        assert isinstance(build(kind, split), FoldsIn), kind
    assert not isinstance(build("mf", split), FoldsIn)
    assert not isinstance(Popularity(split.n_users, split.n_items).fit(split), FoldsIn)


@pytest.mark.parametrize("kind", KINDS)
def test_folding_in_the_training_matrix_changes_nothing(split: PreparedSplit, kind: str) -> None:
    model = build(kind, split)
    before = all_scores(model)
    model.fold_in(split.matrix("train"))  # type: ignore[attr-defined]
    if kind == "lightgcn":  # the adjacency is rebuilt: the same graph, float sums in another order at most
        np.testing.assert_allclose(all_scores(model), before, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(all_scores(model), before)


@pytest.mark.parametrize("kind", KINDS)
def test_folding_in_validation_items_scores_from_them_with_the_same_parameters(split: PreparedSplit, kind: str) -> None:
    model = build(kind, split)
    before = all_scores(model)
    params = {name: t.detach().clone() for name, t in model.state_dict().items()} if kind == "lightgcn" else None
    added = np.arange(0, split.n_users, 2)  # even users gain their validation item, odd users do not
    assert (np.diff(split.matrix("valid").indptr)[added] > 0).all()
    folded = some_users_valid(split, added)
    model.fold_in(folded)  # type: ignore[attr-defined]
    after = all_scores(model)
    changed = np.flatnonzero(np.abs(after - before).max(axis=1) > 1e-6)
    assert set(added) <= set(changed.tolist()), f"unchanged users with a folded-in item: {set(added) - set(changed)}"

    x = folded.toarray().astype(np.float64)
    if kind == "ease":
        assert isinstance(model, EASE) and isinstance(model.weights, np.ndarray)
        np.testing.assert_allclose(after, x @ model.weights, rtol=1e-5, atol=1e-6)
    elif kind == "itemknn":
        assert isinstance(model, ItemKNN) and model.neighbours_t is not None
        np.testing.assert_allclose(after, x @ model.neighbours_t.T.toarray(), rtol=1e-5, atol=1e-6)
    elif kind == "userknn":
        assert isinstance(model, UserKNN) and model.neighbours is not None
        np.testing.assert_allclose(after, model.neighbours.toarray() @ x, rtol=1e-5, atol=1e-6)
    else:  # the trained embeddings, propagated over the new graph: a LightGCN built on it with the same weights
        assert params is not None
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(tensor, params[name], rtol=0, atol=0)
        reference = LightGCN(split.n_users, split.n_items, folded, embedding_dim=8, num_layers=2).eval()
        reference.load_state_dict(params)
        np.testing.assert_allclose(after, all_scores(reference), rtol=1e-5, atol=1e-6)
    if kind in ("ease", "itemknn"):  # a user's scores read that user's row alone
        odd = np.setdiff1d(np.arange(split.n_users), added)
        np.testing.assert_array_equal(after[odd], before[odd])

    model.fold_in(split.matrix("train"))  # type: ignore[attr-defined]
    np.testing.assert_allclose(all_scores(model), before, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_a_matrix_of_another_shape_is_refused_and_the_model_kept(split: PreparedSplit, kind: str) -> None:
    model = build(kind, split)
    before = all_scores(model)
    n, m = split.n_users, split.n_items
    for shape in ((n + 1, m), (m, n)):
        wrong = sp.csr_matrix(shape, dtype=np.float32)
        pattern = re.escape(f"interactions of shape {shape}, expected {(n, m)}")
        with pytest.raises(ValueError, match=pattern):
            model.fold_in(wrong)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(all_scores(model), before)


# -- the evaluator --------------------------------------------------------------------------------------------------


def lists_by_hand(model: Recommender, split: PreparedSplit, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Test users and their top-k: the model's scores with train + valid masked, -1 where only masked items are left."""
    users = np.flatnonzero(np.diff(split.matrix("test").indptr) > 0)
    with torch.no_grad():
        scores = model.score_all(torch.from_numpy(users)).clone()
    seen = torch.from_numpy(train_valid(split)[users].toarray() > 0)
    scores[seen] = float("-inf")
    values, items = torch.topk(scores, k, dim=1)
    items[values == float("-inf")] = -1
    return users, items.numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_the_test_stage_reads_train_and_valid_then_the_model_is_restored(split: PreparedSplit, kind: str) -> None:
    ks = (5, 10)
    model = build(kind, split)
    before = all_scores(model)
    plain = evaluate(model, split, "test", ks)
    _, unfolded_lists = lists_by_hand(model, split, max(ks))

    got = evaluate(model, split, "test", ks, fold_in=True, keep_per_user=True)
    np.testing.assert_allclose(all_scores(model), before, rtol=1e-6, atol=1e-6)  # restored to the training matrix

    twin = build(kind, split)  # the same model, folded in by hand
    twin.fold_in(train_valid(split))  # type: ignore[attr-defined]
    users, lists = lists_by_hand(twin, split, max(ks))
    assert not np.array_equal(lists, unfolded_lists)  # the fold-in changed what is ranked
    want = evaluate_topk(lists, users, split, "test", ks)
    assert got.metrics.keys() == want.metrics.keys()
    for name, value in want.metrics.items():
        assert got.metrics[name] == pytest.approx(value, abs=1e-9), name
    assert got.per_user is not None
    np.testing.assert_array_equal(got.per_user.users, users)
    np.testing.assert_array_equal(got.per_user.topk, lists)
    assert plain.metrics != got.metrics

    # Validation reads the training matrix with or without fold_in
    assert evaluate(model, split, "valid", ks, fold_in=True).metrics == evaluate(model, split, "valid", ks).metrics
    np.testing.assert_allclose(all_scores(model), before, rtol=1e-6, atol=1e-6)


def test_the_model_is_restored_when_scoring_fails(split: PreparedSplit, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build("ease", split)
    assert isinstance(model, EASE)
    seen_by_score_all: list[int] = []

    def failing(users: torch.Tensor) -> torch.Tensor:
        assert model.train is not None
        seen_by_score_all.append(model.train.nnz)
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(model, "score_all", failing)
    with pytest.raises(RuntimeError, match="scoring failed"):
        evaluate(model, split, "test", fold_in=True)
    assert seen_by_score_all == [train_valid(split).nnz]  # it was folded in when scoring ...
    assert model.train is not None and (model.train != split.matrix("train")).nnz == 0  # ... and restored after


def test_fold_in_changes_nothing_for_a_model_that_cannot(split: PreparedSplit) -> None:
    model = build("mf", split)
    for stage in ("valid", "test"):
        assert evaluate(model, split, stage, fold_in=True).metrics == evaluate(model, split, stage).metrics
