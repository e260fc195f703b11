"""Most-popular baseline: every user gets the items with the most training users, the floor any model must beat."""

from __future__ import annotations

from typing import Self

import numpy as np
import torch

from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender


class Popularity(Recommender):
    """Ranks items by the number of distinct users who interacted with them in training (same list for every user).

    ``popularity`` holds those counts; scores are ``n_items - rank`` with ties broken by the lower item index, so the
    ranking is deterministic whatever K (``torch.topk`` orders equal scores arbitrarily)."""

    def __init__(self, n_users: int, n_items: int) -> None:
        self.n_users = n_users
        self.n_items = n_items
        self.popularity: np.ndarray | None = None
        self.scores: torch.Tensor | None = None

    def fit(self, split: PreparedSplit) -> Self:
        train = split.matrix("train")
        _check_shape(self, train.shape)
        self.popularity = np.asarray(train.sum(axis=0)).ravel().astype(np.int64)
        order = np.lexsort((np.arange(self.n_items), -self.popularity))  # by count desc, then index asc
        scores = np.empty(self.n_items, dtype=np.float32)
        scores[order] = np.arange(self.n_items, 0, -1, dtype=np.float32)
        self.scores = torch.from_numpy(scores)
        return self

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        if self.scores is None:
            raise RuntimeError("Popularity is not fitted; call fit(split) first")
        # A broadcast view, not a copy: the evaluator copies it before masking.
        return self.scores.to(users.device).expand(len(users), -1)


def _check_shape(model: Recommender, shape: tuple[int, int]) -> None:
    if shape != (model.n_users, model.n_items):
        raise ValueError(
            f"{type(model).__name__} was built for {model.n_users} users x {model.n_items} items but the split's "
            f"training matrix is {shape[0]} x {shape[1]}; build it with the split's n_users and n_items"
        )
