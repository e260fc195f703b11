"""LightGCN (He et al., 2020) on :class:`torch_geometric.nn.models.LightGCN` over the normalised bipartite graph.

Users are nodes ``0..n_users-1`` and items ``n_users..n_users+n_items-1`` of one graph built from the training
matrix. The symmetric normalisation ``D^-1/2 A D^-1/2`` is computed once and kept as a sparse CSR tensor, so
propagation is ``torch.sparse`` matmul: no pyg-lib, torch-sparse or torch-scatter needed. pyg's ``LightGCN`` holds the
node embedding table, its ``LGConv`` layers (with ``normalize=False``, since the adjacency is already normalised) and
the layer weights ``alpha``; we propagate with them ourselves so the optional text side-input can join the item rows
before propagation, and so the L2 penalty covers only the batch rows (pyg's ``recommendation_loss`` covers the whole
table). With the text side-input, an item without training interactions starts with a zero id row: its ego vector is
its text projection alone.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch_geometric.nn.models import LightGCN as PygLightGCN

from recstack.models.base import Recommender, fold_in_matrix
from recstack.models.batches import InteractionBatch
from recstack.models.losses import embedding_loss, l2_regularisation
from recstack.models.text_input import attach_text_input


def normalized_adjacency(train_matrix: sp.spmatrix) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the bipartite user-item graph as a ``(U+I, U+I)`` float32 torch CSR tensor."""
    r = sp.csr_matrix(train_matrix, dtype=np.float32)
    r.data[:] = 1.0
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    nz = degree > 0
    inv_sqrt[nz] = degree[nz] ** -0.5
    norm = sp.diags(inv_sqrt) @ adj @ sp.diags(inv_sqrt)
    norm = sp.csr_matrix(norm, dtype=np.float32)
    norm.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what we want, and it works
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(norm.indptr.astype(np.int64)),
            torch.from_numpy(norm.indices.astype(np.int64)),
            torch.from_numpy(norm.data),
            size=norm.shape,
            check_invariants=False,
        )


class LightGCN(nn.Module, Recommender):
    """Graph-propagated embeddings; ``score_all(u) == user_embeddings()[u] @ item_embeddings().T``."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train_matrix: sp.spmatrix,
        embedding_dim: int = 64,
        num_layers: int = 3,
        loss: Literal["bpr", "softmax"] = "bpr",
        reg_weight: float = 1e-4,
        temperature: float = 0.1,
        in_batch_negatives: bool = True,
        item_text_vectors: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if train_matrix.shape != (n_users, n_items):
            raise ValueError(
                f"train_matrix has shape {train_matrix.shape}, expected (n_users, n_items) = ({n_users}, {n_items}); "
                "pass split.matrix('train') of the same split"
            )
        if loss not in ("bpr", "softmax"):
            raise ValueError(f"LightGCN loss={loss!r}; choose 'bpr' or 'softmax'")
        self.n_users = n_users
        self.n_items = n_items
        self.loss_name = loss
        self.reg_weight = reg_weight
        self.temperature = temperature
        self.in_batch_negatives = in_batch_negatives
        self.gcn = PygLightGCN(n_users + n_items, embedding_dim, num_layers, normalize=False)
        # Rebuilt from the split at load time, so it stays out of checkpoints.
        self.register_buffer("adjacency", normalized_adjacency(train_matrix), persistent=False)
        self.text_projection: nn.Linear | None = None
        if item_text_vectors is not None:
            self.text_projection = attach_text_input(
                self,
                item_text_vectors,
                n_items,
                embedding_dim,
                0.1,
                item_id_rows=self.gcn.embedding.weight[n_users:],
                train_matrix=train_matrix,
            )

    def _ego(self) -> torch.Tensor:
        x = self.gcn.embedding.weight
        if self.text_projection is None:
            return x
        content = self.text_projection(self.item_text)
        return torch.cat([x[: self.n_users], x[self.n_users :] + content], dim=0)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``(user_vectors, item_vectors)``: the alpha-weighted sum of every layer's embeddings."""
        x = self._ego()
        out = x * self.gcn.alpha[0]
        for i, conv in enumerate(self.gcn.convs):
            x = conv(x, self.adjacency)
            out = out + x * self.gcn.alpha[i + 1]
        return out[: self.n_users], out[self.n_users :]

    def fold_in(self, interactions: sp.spmatrix) -> None:
        """Propagate over the graph of ``interactions`` instead of the training graph, with the trained layer-0
        embeddings (:class:`recstack.models.base.FoldsIn`): a user's and an item's vectors then reflect every
        interaction in it, without retraining. The adjacency is rebuilt on the device of the old one."""
        graph = normalized_adjacency(fold_in_matrix(self, interactions))
        self.adjacency = graph.to(self.adjacency.device)

    def user_embeddings(self) -> torch.Tensor:
        """``(n_users, d)`` user vectors after propagation over the training graph (or the one folded in)."""
        return self.propagate()[0]

    def item_embeddings(self) -> torch.Tensor:
        """``(n_items, d)`` item vectors after propagation (with the text side-input when configured)."""
        return self.propagate()[1]

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        user_vecs, item_vecs = self.propagate()
        return (user_vecs[users.long()] * item_vecs[items.long()]).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        user_vecs, item_vecs = self.propagate()
        return user_vecs[users.long()] @ item_vecs.T

    def loss(self, batch: InteractionBatch) -> torch.Tensor:
        user_vecs, item_vecs = self.propagate()
        u = user_vecs[batch.users]
        pos = item_vecs[batch.items]
        main = embedding_loss(
            self.loss_name,
            u,
            pos,
            item_vecs[batch.negatives],
            batch.items,
            temperature=self.temperature,
            in_batch_negatives=self.in_batch_negatives,
        )
        # L2 on the layer-0 (ego) rows of this batch only, as in the LightGCN paper and pyg's example.
        emb = self.gcn.embedding.weight
        reg = l2_regularisation(
            emb[batch.users], emb[self.n_users + batch.items], emb[self.n_users + batch.negatives].flatten(0, 1)
        )
        return main + self.reg_weight * reg
