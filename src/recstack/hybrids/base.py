"""What every hybrid shares: its parts, the fit flow (parts on train, then tuning on the validation split only), and
the validation score used to tune it.

A hybrid's :meth:`Hybrid.fit` reads the split's training interactions (to train the parts, and to know which items
each user has seen) and its validation interactions (to tune); it never reads ``split.test``, which only the
evaluator reads afterwards. Tuning scores candidate settings with the evaluator's own metrics
(:func:`~recstack.evaluation.evaluator.evaluate_topk`) over the validation users, seen items masked as the
evaluator masks them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Self

import numpy as np
import scipy.sparse as sp
import torch

from recstack.data.prepared import PreparedSplit
from recstack.evaluation.evaluator import evaluate_topk
from recstack.hybrids.parts import (
    DEFAULT_RUNS_ROOT,
    Normalisation,
    build_parts,
    check_part_names,
    known_items,
    seen_mask,
)
from recstack.models.base import Recommender

TUNE_METRIC = "ndcg@10"


class Hybrid(Recommender):
    """Base of the hybrids: ``parts`` are base-model names (``configs/model/<name>.yaml``); ``runs`` maps trainable
    parts to run folders (else they are trained in-process into ``runs_root``, with ``train_overrides``);
    ``normalise`` is how part scores are put on one scale per user; ``tune_users`` caps the validation users used for
    tuning (a seeded sample, for large datasets; null: all)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        parts: Sequence[str],
        runs: Mapping[str, str] | None = None,
        runs_root: str = DEFAULT_RUNS_ROOT,
        train_overrides: Sequence[str] = (),
        normalise: Normalisation = "zscore",
        tune_users: int | None = None,
        seed: int = 0,
    ) -> None:
        if normalise not in ("zscore", "minmax"):
            raise ValueError(f"normalise={normalise!r}; choose 'zscore' or 'minmax'")
        self.n_users = n_users
        self.n_items = n_items
        self.part_names = check_part_names(parts)
        self.runs = dict(runs or {})
        self.runs_root = runs_root
        self.train_overrides = tuple(train_overrides)
        self.normalise = normalise
        self.tune_users = tune_users
        self.seed = seed
        self.parts: dict[str, Recommender] = {}
        self.train: sp.csr_matrix | None = None
        self.tuning: dict[str, object] = {}  # what tuning tried and chose, for reports
        self.known: dict[str, torch.Tensor] = {}  # per part, the items it can score (parts.known_items)

    def fit(self, split: PreparedSplit, parts: Mapping[str, Recommender] | None = None) -> Self:
        """Train the parts on ``split``'s training interactions (or take the already trained ``parts``, a mapping that
        holds at least this hybrid's part names), then tune on its validation interactions."""
        if (split.n_users, split.n_items) != (self.n_users, self.n_items):
            raise ValueError(
                f"{type(self).__name__} was built for {self.n_users} users x {self.n_items} items but the split has "
                f"{split.n_users} x {split.n_items}; build it with the split's n_users and n_items"
            )
        if parts is None:
            self.parts = build_parts(
                self.part_names, split, runs=self.runs, runs_root=self.runs_root, train_overrides=self.train_overrides
            )
        else:
            missing = [n for n in self.part_names if n not in parts]
            if missing:
                raise ValueError(f"parts given to fit lack {missing}; the hybrid needs {list(self.part_names)}")
            self.parts = {n: parts[n] for n in self.part_names}
        for name, model in self.parts.items():
            if (model.n_users, model.n_items) != (self.n_users, self.n_items):
                raise ValueError(
                    f"part {name} has {model.n_users} x {model.n_items}, the split {self.n_users} x {self.n_items}"
                )
        self.train = split.matrix("train")
        self.known = {name: known_items(model, split) for name, model in self.parts.items()}
        self._tune(split)
        return self

    @abstractmethod
    def _tune(self, split: PreparedSplit) -> None:
        """Choose the hybrid's weights / threshold / meta-model on ``split``'s validation interactions only."""

    def _seen(self, users: torch.Tensor) -> torch.Tensor:
        if self.train is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(split) first")
        return seen_mask(self.train, users.detach().cpu().numpy())

    def tuning_users(self, split: PreparedSplit) -> np.ndarray:
        """Validation users (those with a validation interaction), a seeded sample of ``tune_users`` when set."""
        users = np.flatnonzero(np.diff(split.matrix("valid").indptr) > 0)
        if users.size == 0:
            raise ValueError(f"no user has a validation interaction in {split!r}: a hybrid is tuned on validation")
        if self.tune_users is not None and users.size > self.tune_users:
            users = np.sort(np.random.default_rng(self.seed).choice(users, self.tune_users, replace=False))
        return users


def top_unseen(scores: torch.Tensor, seen: torch.Tensor, k: int) -> np.ndarray:
    """The ``k`` best items per row with seen items masked (as the evaluator masks them); ``-1`` past the unseen."""
    masked = scores.float().masked_fill(seen, float("-inf"))
    values, items = torch.topk(masked, k, dim=1)
    items[values == float("-inf")] = -1
    return items.numpy()


def valid_metric(topk: np.ndarray, users: np.ndarray, split: PreparedSplit, metric: str = TUNE_METRIC) -> float:
    """``metric`` (e.g. ``ndcg@10``) of ranked lists on the validation split, by the evaluator's definitions."""
    k = int(metric.split("@")[1])
    return float(evaluate_topk(topk[:, :k], users, split, "valid", (k,)).metrics[metric])


def below_candidates(
    candidate_scores: torch.Tensor, is_candidate: torch.Tensor, fallback: torch.Tensor
) -> torch.Tensor:
    """Full score rows where every candidate ranks above every other item: candidates keep ``candidate_scores``; the
    others follow ``fallback``'s order, shifted below the row's lowest candidate score (finite everywhere, so the
    evaluator never runs out of items)."""
    low = torch.where(is_candidate, candidate_scores, torch.inf).amin(dim=1, keepdim=True)
    low = torch.where(torch.isfinite(low), low, 0.0)
    top = torch.where(is_candidate, -torch.inf, fallback).amax(dim=1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, 0.0)
    rest = fallback - top + low - 1.0
    return torch.where(is_candidate, candidate_scores, rest)
