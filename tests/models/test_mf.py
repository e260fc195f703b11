"""MF: the loss falls on tiny data, and scores are exactly the inner product of the exported embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.data.prepared import PreparedSplit
from recstack.models.mf import MatrixFactorization
from recstack.training.datamodule import InteractionDataModule


def train_steps(model: torch.nn.Module, split: PreparedSplit, epochs: int, negatives: int = 4) -> list[float]:
    """Mean loss per epoch of a plain Adam loop over the real DataModule's batches."""
    torch.manual_seed(0)
    dm = InteractionDataModule(split, batch_size=64, negatives=negatives, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(epochs):
        total = []
        for batch in dm.train_dataloader():
            opt.zero_grad()
            loss = model.loss(batch)
            loss.backward()
            opt.step()
            total.append(loss.item())
        losses.append(float(np.mean(total)))
    return losses


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
def test_loss_falls(tiny_split: PreparedSplit, loss: str) -> None:
    torch.manual_seed(0)
    model = MatrixFactorization(tiny_split.n_users, tiny_split.n_items, embedding_dim=16, loss=loss)
    losses = train_steps(model, tiny_split, epochs=8)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("with_text", [False, True])
def test_score_all_is_embedding_inner_product(tiny_split: PreparedSplit, with_text: bool) -> None:
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(tiny_split.n_items, 384), dim=1) if with_text else None
    model = MatrixFactorization(tiny_split.n_users, tiny_split.n_items, embedding_dim=8, item_text_vectors=text)
    users = torch.tensor([0, 5, 29])
    expected = model.user_embeddings()[users] @ model.item_embeddings().T
    assert model.user_embeddings().shape == (tiny_split.n_users, 8)
    assert model.item_embeddings().shape == (tiny_split.n_items, 8)
    torch.testing.assert_close(model.score_all(users), expected)
    items = torch.tensor([1, 2, 3])
    torch.testing.assert_close(model.score(users, items), expected[torch.arange(3), items])


def test_text_side_input_gives_unseen_items_distinct_vectors(tiny_split: PreparedSplit) -> None:
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(tiny_split.n_items, 384), dim=1)
    model = MatrixFactorization(tiny_split.n_users, tiny_split.n_items, embedding_dim=8, item_text_vectors=text)
    with torch.no_grad():
        model.item_embedding.weight.zero_()  # as if no item had been seen: only the text part is left
    vectors = model.item_embeddings()
    assert torch.linalg.matrix_rank(vectors) == 8


def test_wrong_text_rows_are_rejected() -> None:
    with pytest.raises(ValueError, match="encode the split's items"):
        MatrixFactorization(3, 4, item_text_vectors=torch.zeros(5, 384))
