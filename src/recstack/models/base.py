"""The one contract every recommender honours, classical or deep, so one evaluator scores them all the same way.

Users and items are the contiguous indices of a :class:`~recstack.data.prepared.PreparedSplit`. Scores are torch
tensors so that the evaluator runs on CPU or GPU alike; classical models build them from numpy/scipy without copies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch


class Recommender(ABC):
    """Scores users over the whole catalogue.

    Subclasses implement :meth:`score_all`; :meth:`score` and :meth:`recommend` have generic defaults that a model may
    override with something faster. Deep models also subclass ``torch.nn.Module`` (listed first in their bases) and
    add ``loss(batch)``; they are trained by :mod:`recstack.training`.
    """

    n_users: int
    n_items: int
    # Whether the model's scores mean something for items without a training interaction (a content model: yes; a
    # collaborative one only has a default there). Hybrids let a part abstain on the items it cannot score.
    scores_untrained_items: bool = False

    @abstractmethod
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of shape ``(len(users), n_items)`` for a 1-D long tensor of user indices; higher is better."""

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of the pairs ``(users[i], items[i])``, shape ``(len(users),)``."""
        return self.score_all(users).gather(1, items.view(-1, 1).to(torch.long)).view(-1)

    @torch.no_grad()
    def recommend(
        self, users: torch.Tensor, k: int, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` ``(scores, item_indices)`` per user; ``exclude`` is a boolean ``(len(users), n_items)`` mask of
        items that must not be recommended (e.g. training items)."""
        if not 1 <= k <= self.n_items:
            raise ValueError(f"k={k} must be between 1 and the catalogue size {self.n_items}")
        scores = self.score_all(users).float()
        if exclude is not None:
            scores = scores.masked_fill(exclude.to(scores.device), float("-inf"))
        return torch.topk(scores, k, dim=1)


@runtime_checkable
class FoldsIn(Protocol):
    """A model that reads each user's interactions at inference, not only at training: item-item models (EASE,
    ItemKNN) score a user's history, UserKNN its neighbours' rows, LightGCN propagates over the interaction graph.

    ``fold_in(interactions)`` makes a binary ``(n_users, n_items)`` matrix what the model reads from now on, its
    trained parameters unchanged: interactions newer than the training split count without retraining (the test
    stage with its validation interactions, ``recstack.evaluation.evaluate(fold_in=True)``; a bundle with the
    interactions known at export, ``recstack-export fold_in=true``). ``fold_in(split.matrix("train"))`` restores the
    model as trained. Models whose user vectors are trained parameters (MF, Wide & Deep) have nothing to fold in."""

    n_users: int
    n_items: int

    def fold_in(self, interactions: sp.spmatrix) -> None: ...


def fold_in_matrix(model: Recommender, interactions: sp.spmatrix) -> sp.csr_matrix:
    """``interactions`` as the binary float32 CSR (a copy) a model folds in, after checking it is
    ``(n_users, n_items)``."""
    shape = (model.n_users, model.n_items)
    if tuple(interactions.shape) != shape:
        raise ValueError(
            f"{type(model).__name__}.fold_in: interactions of shape {tuple(interactions.shape)}, expected {shape} "
            "(users x items of the split the model was trained on)"
        )
    matrix = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.data[:] = 1.0
    return matrix
