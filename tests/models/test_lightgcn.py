"""LightGCN: the loss falls, the CSR propagation equals pyg's own, scores are the embeddings' inner product."""

from __future__ import annotations

import numpy as np
import torch
from test_mf import train_steps  # tests/models is on sys.path (pytest prepend import mode)
from torch_geometric.nn.models import LightGCN as PygLightGCN

from recstack.data.prepared import PreparedSplit
from recstack.models.lightgcn import LightGCN, normalized_adjacency


def test_loss_falls(tiny_split: PreparedSplit) -> None:
    torch.manual_seed(0)
    model = LightGCN(tiny_split.n_users, tiny_split.n_items, tiny_split.matrix("train"), embedding_dim=16, num_layers=2)
    losses = train_steps(model, tiny_split, epochs=8)
    assert losses[-1] < 0.8 * losses[0], losses


def test_propagation_matches_pyg_edge_index(tiny_split: PreparedSplit) -> None:
    """Our precomputed, normalised CSR adjacency gives pyg's LightGCN embeddings over an edge_index."""
    torch.manual_seed(0)
    m = tiny_split.matrix("train").tocoo()
    model = LightGCN(tiny_split.n_users, tiny_split.n_items, tiny_split.matrix("train"), embedding_dim=8)
    reference = PygLightGCN(tiny_split.n_users + tiny_split.n_items, 8, num_layers=3)
    reference.embedding.weight.data.copy_(model.gcn.embedding.weight.data)
    rows = torch.from_numpy(m.row.astype(np.int64))
    cols = torch.from_numpy(m.col.astype(np.int64)) + tiny_split.n_users
    edge_index = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
    expected = reference.get_embedding(edge_index)
    users, items = model.propagate()
    torch.testing.assert_close(torch.cat([users, items]), expected, rtol=1e-5, atol=1e-6)


def test_adjacency_is_symmetric_and_normalised(tiny_split: PreparedSplit) -> None:
    adj = normalized_adjacency(tiny_split.matrix("train")).to_dense()
    torch.testing.assert_close(adj, adj.T)
    degree = (adj > 0).sum(1).float()
    nz = degree > 0
    # Every entry is 1/sqrt(d_u d_i).
    expected = (adj > 0).float() / torch.sqrt(degree[:, None].clamp(min=1) * degree[None, :].clamp(min=1))
    torch.testing.assert_close(adj[nz][:, nz], expected[nz][:, nz])


def test_score_all_is_embedding_inner_product(tiny_split: PreparedSplit) -> None:
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(tiny_split.n_items, 384), dim=1)
    model = LightGCN(
        tiny_split.n_users, tiny_split.n_items, tiny_split.matrix("train"), embedding_dim=8, item_text_vectors=text
    )
    users = torch.tensor([0, 7, 29])
    expected = model.user_embeddings()[users] @ model.item_embeddings().T
    torch.testing.assert_close(model.score_all(users), expected)
    assert model.item_embeddings().shape == (tiny_split.n_items, 8)
