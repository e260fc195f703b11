"""Matrix factorisation: users and items as ``d``-dimensional vectors, score = inner product.

Trained with BPR over ``n`` sampled negatives per positive, or with a sampled softmax whose negatives are the sampled
ones plus (optionally) the other positives of the batch. With ``normalize`` the vectors are unit length (cosine
scores, the usual companion of a softmax with a temperature); the exported embeddings are then the normalised ones. With ``item_text_vectors`` (the BERT item vectors of
:mod:`recstack.models.text_encoder`) an item's vector is its id embedding plus a learned projection of its text vector,
so an item never seen in training still gets a vector from its text alone: given ``train_matrix`` (as
:func:`recstack.training.build.build_model` does), the id rows of items without a training interaction start at zero.
"""

from __future__ import annotations

from typing import Literal

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recstack.models.base import Recommender
from recstack.models.batches import InteractionBatch
from recstack.models.losses import embedding_loss, l2_regularisation
from recstack.models.text_input import attach_text_input

MFLoss = Literal["bpr", "softmax"]


class MatrixFactorization(nn.Module, Recommender):
    """Inner-product recommender; ``score_all(u) == user_embeddings()[u] @ item_embeddings().T``."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        embedding_dim: int = 64,
        loss: MFLoss = "bpr",
        reg_weight: float = 1e-4,
        temperature: float = 0.1,
        in_batch_negatives: bool = True,
        item_text_vectors: torch.Tensor | None = None,
        init_std: float = 0.1,
        normalize: bool = False,
        train_matrix: sp.spmatrix | None = None,
    ) -> None:
        super().__init__()
        if loss not in ("bpr", "softmax"):
            raise ValueError(f"MatrixFactorization loss={loss!r}; choose 'bpr' or 'softmax'")
        self.n_users = n_users
        self.n_items = n_items
        self.loss_name = loss
        self.reg_weight = reg_weight
        self.temperature = temperature
        self.in_batch_negatives = in_batch_negatives
        self.normalize = normalize
        self.user_embedding = nn.Embedding(n_users, embedding_dim)
        self.item_embedding = nn.Embedding(n_items, embedding_dim)
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.item_embedding.weight, std=init_std)
        self.text_projection: nn.Linear | None = None
        if item_text_vectors is not None:
            self.text_projection = attach_text_input(
                self,
                item_text_vectors,
                n_items,
                embedding_dim,
                init_std,
                item_id_rows=self.item_embedding.weight,
                train_matrix=train_matrix,
            )

    def _items(self, items: torch.Tensor) -> torch.Tensor:
        vecs = self.item_embedding(items)
        if self.text_projection is not None:
            vecs = vecs + self.text_projection(self.item_text[items])
        return F.normalize(vecs, dim=-1) if self.normalize else vecs

    def _users(self, users: torch.Tensor) -> torch.Tensor:
        vecs = self.user_embedding(users)
        return F.normalize(vecs, dim=-1) if self.normalize else vecs

    def user_embeddings(self) -> torch.Tensor:
        """``(n_users, d)`` user vectors (unit length when ``normalize``)."""
        return self._users(torch.arange(self.n_users, device=self.user_embedding.weight.device))

    def item_embeddings(self) -> torch.Tensor:
        """``(n_items, d)`` final item vectors (with the text projection when configured)."""
        return self._items(torch.arange(self.n_items, device=self.item_embedding.weight.device))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self._users(users) * self._items(items)).sum(-1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.forward(users.long(), items.long())

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self._users(users.long()) @ self.item_embeddings().T

    def loss(self, batch: InteractionBatch) -> torch.Tensor:
        u = self._users(batch.users)
        pos = self._items(batch.items)
        neg = self._items(batch.negatives)  # (B, n, d)
        main = embedding_loss(
            self.loss_name,
            u,
            pos,
            neg,
            batch.items,
            temperature=self.temperature,
            in_batch_negatives=self.in_batch_negatives,
        )
        # Regularise the id rows only: the text projection is shared by all items and has its own small scale.
        reg = l2_regularisation(u, self.item_embedding(batch.items), self.item_embedding(batch.negatives).flatten(0, 1))
        return main + self.reg_weight * reg
