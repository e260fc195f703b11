"""The text side-input and cold items: an item without training interactions starts as its text projection alone
(its id-embedding row is zero), in MF and in LightGCN's ego (layer-0) rows; items with interactions keep their
random id rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.models.lightgcn import LightGCN
from recstack.models.mf import MatrixFactorization
from recstack.training import build

COLD = [3, 17, 38]


def train_without(split: PreparedSplit, items: list[int]) -> sp.csr_matrix:
    """The split's training matrix with every interaction of ``items`` removed."""
    keep = np.ones(split.n_items, dtype=np.float32)
    keep[items] = 0.0
    matrix = sp.csr_matrix(split.matrix("train") @ sp.diags(keep))
    matrix.eliminate_zeros()
    return matrix


def text_vectors(n_items: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n_items, 384), dim=1)


def cold_items(matrix: sp.spmatrix) -> np.ndarray:
    return np.flatnonzero(sp.csr_matrix(matrix).getnnz(axis=0) == 0)


def test_mf_cold_item_is_its_text_projection(tiny_split: PreparedSplit) -> None:
    torch.manual_seed(0)
    train = train_without(tiny_split, COLD)
    cold = cold_items(train)
    assert set(COLD) <= set(cold.tolist()) and len(cold) < tiny_split.n_items
    warm = np.setdiff1d(np.arange(tiny_split.n_items), cold)
    model = MatrixFactorization(
        tiny_split.n_users,
        tiny_split.n_items,
        embedding_dim=8,
        item_text_vectors=text_vectors(tiny_split.n_items),
        train_matrix=train,
    )
    assert model.text_projection is not None
    with torch.no_grad():
        vectors = model.item_embeddings()
        projected = model.text_projection(model.item_text)
    assert torch.count_nonzero(model.item_embedding.weight[cold]) == 0
    torch.testing.assert_close(vectors[cold], projected[cold], rtol=0, atol=0)
    assert torch.all(model.item_embedding.weight[warm].abs().sum(dim=1) > 0)  # seen items keep their random start


def test_lightgcn_cold_item_ego_row_is_its_text_projection(tiny_split: PreparedSplit) -> None:
    torch.manual_seed(0)
    train = train_without(tiny_split, COLD)
    cold = cold_items(train)
    warm = np.setdiff1d(np.arange(tiny_split.n_items), cold)
    model = LightGCN(
        tiny_split.n_users,
        tiny_split.n_items,
        train,
        embedding_dim=8,
        num_layers=3,
        item_text_vectors=text_vectors(tiny_split.n_items),
    )
    assert model.text_projection is not None
    n_users = tiny_split.n_users
    with torch.no_grad():
        ego = model._ego()[n_users:]
        projected = model.text_projection(model.item_text)
        items = model.item_embeddings()
    id_rows = model.gcn.embedding.weight[n_users:]
    assert torch.count_nonzero(id_rows[cold]) == 0
    torch.testing.assert_close(ego[cold], projected[cold], rtol=0, atol=0)
    # An isolated node gets nothing from propagation: only its ego term, weighted by alpha[0].
    torch.testing.assert_close(items[cold], model.gcn.alpha[0] * projected[cold])
    assert torch.all(id_rows[warm].abs().sum(dim=1) > 0)
    assert torch.all(model.gcn.embedding.weight[:n_users].abs().sum(dim=1) > 0)  # user rows untouched


def test_without_text_no_row_is_zeroed(tiny_split: PreparedSplit) -> None:
    torch.manual_seed(0)
    train = train_without(tiny_split, COLD)
    mf = MatrixFactorization(tiny_split.n_users, tiny_split.n_items, embedding_dim=8, train_matrix=train)
    gcn = LightGCN(tiny_split.n_users, tiny_split.n_items, train, embedding_dim=8)
    assert torch.all(mf.item_embedding.weight.abs().sum(dim=1) > 0)
    assert torch.all(gcn.gcn.embedding.weight.abs().sum(dim=1) > 0)


@pytest.mark.parametrize("model_name", ["mf", "lightgcn"])
def test_build_model_zeroes_cold_rows_with_text_side_input(
    model_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_split_writer: Callable[..., Path]
) -> None:
    """build_model hands the training matrix to both models, so the config path gets the same start."""
    # The tiny split with 80 items: some of them occur only in valid / test.
    split = PreparedSplit.load(tiny_split_writer(tmp_path / "tiny80", n_items=80))
    cold = cold_items(split.matrix("train"))
    assert len(cold) > 0
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((split.n_items, 384)).astype(np.float32)
    monkeypatch.setattr(build, "item_text_vectors", lambda *args, **kwargs: vectors)  # no MiniLM here
    torch.manual_seed(0)
    cfg = compose("train", [f"model={model_name}", "fit.text_side_input=true", "model.embedding_dim=8"])
    model = build.build_model(cfg.model, split, text_side_input=cfg.fit.text_side_input, progress=False)
    assert model.text_projection is not None
    with torch.no_grad():
        projected = model.text_projection(model.item_text)
        if isinstance(model, LightGCN):
            ego = model._ego()[split.n_users :]
        else:
            assert isinstance(model, MatrixFactorization)
            ego = model.item_embeddings()
    torch.testing.assert_close(ego[cold], projected[cold], rtol=0, atol=0)
    warm = np.setdiff1d(np.arange(split.n_items), cold)
    assert not torch.allclose(ego[warm], projected[warm])
