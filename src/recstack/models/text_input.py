"""The item-text side-input shared by MF and LightGCN: BERT vectors projected into the id-embedding space."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


def attach_text_input(
    module: nn.Module,
    item_text_vectors: np.ndarray,
    n_items: int,
    embedding_dim: int,
    init_std: float,
    *,
    item_id_rows: torch.Tensor,
    train_matrix: sp.spmatrix | None = None,
) -> nn.Linear:
    """Register ``module.item_text`` (a buffer, ``(n_items, D)``) and return the ``D -> embedding_dim`` projection.

    Initialised small (``init_std / sqrt(D)``) so the text starts as a nudge to the id embeddings, not their rival.

    ``item_id_rows``: the model's ``(n_items, embedding_dim)`` item id-embedding rows (the parameter or a view of it).
    With ``train_matrix`` (users x items, training interactions), the rows of items without a training interaction
    are set to zero: such an item starts as its text projection alone rather than text plus random noise."""
    if item_text_vectors.shape[0] != n_items:
        raise ValueError(
            f"item_text_vectors has {item_text_vectors.shape[0]} rows but there are {n_items} items; "
            "encode the split's items table (recstack.models.text_encoder.encode_items(split.items))"
        )
    if tuple(item_id_rows.shape) != (n_items, embedding_dim):
        raise ValueError(f"item_id_rows has shape {tuple(item_id_rows.shape)}, expected ({n_items}, {embedding_dim})")
    module.register_buffer("item_text", torch.as_tensor(item_text_vectors, dtype=torch.float32))
    projection = nn.Linear(item_text_vectors.shape[1], embedding_dim, bias=False)
    nn.init.normal_(projection.weight, std=init_std / item_text_vectors.shape[1] ** 0.5)
    if train_matrix is not None:
        if train_matrix.shape[1] != n_items:
            raise ValueError(f"train_matrix has {train_matrix.shape[1]} item columns but there are {n_items} items")
        # Stored entries per column, as normalized_adjacency counts edges: a cold item is an isolated graph node.
        cold = np.flatnonzero(sp.csr_matrix(train_matrix).getnnz(axis=0) == 0)
        with torch.no_grad():
            item_id_rows[torch.from_numpy(cold).to(item_id_rows.device)] = 0.0
    return projection
