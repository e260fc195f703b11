"""User-based k-nearest neighbours: a user's scores are their most similar users' items, weighted by similarity.

Score of item ``i`` for user ``u`` = sum over ``u``'s ``k_neighbors`` most similar users ``v`` of ``sim(u, v) * x_vi``.
The user-user similarity is computed in blocks and pruned to the top N per user (see
:func:`recstack.models.item_knn.top_n_similarity`), so no dense users x users matrix exists for large user counts.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp
import torch

from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender, fold_in_matrix
from recstack.models.item_knn import Similarity, sparse_scores, top_n_similarity
from recstack.models.popularity import _check_shape


class UserKNN(Recommender):
    """User-based collaborative filtering with cosine or Pearson similarity, top-N neighbours per user."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        k_neighbors: int = 100,
        similarity: Similarity = "cosine",
        shrink: float = 0.0,
    ) -> None:
        if similarity not in ("cosine", "pearson"):
            raise ValueError(f"UserKNN similarity={similarity!r}; choose 'cosine' or 'pearson'")
        self.n_users = n_users
        self.n_items = n_items
        self.k_neighbors = k_neighbors
        self.similarity: Similarity = similarity
        self.shrink = shrink
        self.train: sp.csr_matrix | None = None
        self.neighbours: sp.csr_matrix | None = None  # row u holds u's neighbours v with sim(u, v)

    def fit(self, split: PreparedSplit) -> Self:
        train = split.matrix("train")
        _check_shape(self, train.shape)
        self.train = train.astype(np.float32).tocsr()
        self.neighbours = top_n_similarity(train, self.k_neighbors, self.similarity, self.shrink)
        return self

    def fold_in(self, interactions: sp.spmatrix) -> None:
        """Score from ``interactions`` instead of the training matrix (:class:`recstack.models.base.FoldsIn`)."""
        self.train = fold_in_matrix(self, interactions)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        if self.train is None or self.neighbours is None:
            raise RuntimeError("UserKNN is not fitted; call fit(split) first")
        idx = users.detach().cpu().numpy()
        return sparse_scores(self.neighbours[idx] @ self.train).to(users.device)
