"""Most-popular baseline: every user gets the items with the most training users, the floor any model must beat."""

from __future__ import annotations

from typing import Self

import numpy as np
import torch

from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender


class Popularity(Recommender):
    """Score of an item = number of distinct users who interacted with it in training (same for every user)."""

    def __init__(self, n_users: int, n_items: int) -> None:
        self.n_users = n_users
        self.n_items = n_items
        self.popularity: torch.Tensor | None = None

    def fit(self, split: PreparedSplit) -> Self:
        train = split.matrix("train")
        _check_shape(self, train.shape)
        self.popularity = torch.from_numpy(np.asarray(train.sum(axis=0), dtype=np.float32).ravel())
        return self

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        if self.popularity is None:
            raise RuntimeError("Popularity is not fitted; call fit(split) first")
        # A broadcast view, not a copy: the evaluator copies it before masking.
        return self.popularity.to(users.device).expand(len(users), -1)


def _check_shape(model: Recommender, shape: tuple[int, int]) -> None:
    if shape != (model.n_users, model.n_items):
        raise ValueError(
            f"{type(model).__name__} was built for {model.n_users} users x {model.n_items} items but the split's "
            f"training matrix is {shape[0]} x {shape[1]}; build it with the split's n_users and n_items"
        )
