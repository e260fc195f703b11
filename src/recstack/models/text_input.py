"""The item-text side-input shared by MF and LightGCN: BERT vectors projected into the id-embedding space."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def attach_text_input(
    module: nn.Module, item_text_vectors: np.ndarray, n_items: int, embedding_dim: int, init_std: float
) -> nn.Linear:
    """Register ``module.item_text`` (a buffer, ``(n_items, D)``) and return the ``D -> embedding_dim`` projection.

    Initialised small (``init_std / sqrt(D)``) so the text starts as a nudge to the id embeddings, not their rival."""
    if item_text_vectors.shape[0] != n_items:
        raise ValueError(
            f"item_text_vectors has {item_text_vectors.shape[0]} rows but there are {n_items} items; "
            "encode the split's items table (recstack.models.text_encoder.encode_items(split.items))"
        )
    module.register_buffer("item_text", torch.as_tensor(item_text_vectors, dtype=torch.float32))
    projection = nn.Linear(item_text_vectors.shape[1], embedding_dim, bias=False)
    nn.init.normal_(projection.weight, std=init_std / item_text_vectors.shape[1] ** 0.5)
    return projection
