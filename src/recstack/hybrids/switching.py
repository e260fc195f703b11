"""Switching hybrid: users with fewer than ``threshold`` training interactions get the ``cold`` part's ranking
(popularity today, content once it exists), the others the ``warm`` part's (a collaborative model).

The threshold is the candidate with the best validation NDCG@10 (ties: the smaller one); candidates are
``thresholds`` when given, else 0 (always warm) and the training-history lengths at a few quantiles of the users.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from recstack.data.prepared import PreparedSplit
from recstack.hybrids.base import Hybrid, top_unseen, valid_metric
from recstack.hybrids.parts import DEFAULT_RUNS_ROOT, Normalisation, check_two_parts, part_scores, seen_mask

QUANTILES = (0.05, 0.1, 0.2, 0.3, 0.5)


class SwitchingHybrid(Hybrid):
    """``cold`` for users whose training history is shorter than the tuned threshold, ``warm`` for the rest.
    Other arguments: see :class:`~recstack.hybrids.base.Hybrid` (its ``parts`` are ``[cold, warm]``)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        cold: str = "pop",
        warm: str = "ease",
        thresholds: Sequence[int] | None = None,
        runs: Mapping[str, str] | None = None,
        runs_root: str = DEFAULT_RUNS_ROOT,
        train_overrides: Sequence[str] = (),
        normalise: Normalisation = "zscore",
        tune_users: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            n_users,
            n_items,
            check_two_parts({"cold": cold, "warm": warm}, "switching hybrid"),
            runs=runs,
            runs_root=runs_root,
            train_overrides=train_overrides,
            normalise=normalise,
            tune_users=tune_users,
            seed=seed,
        )
        if thresholds is not None and (not thresholds or min(thresholds) < 0):
            raise ValueError(f"thresholds={list(thresholds)} must be a non-empty list of history lengths >= 0")
        self.cold, self.warm = cold, warm
        self.thresholds = None if thresholds is None else tuple(int(t) for t in thresholds)
        self.threshold = 0
        self.history: np.ndarray | None = None

    def _tune(self, split: PreparedSplit) -> None:
        self.history = np.diff(split.matrix("train").indptr)
        candidates = self.thresholds
        if candidates is None:
            candidates = (0, *np.quantile(self.history, QUANTILES).astype(int).tolist())
        candidates = tuple(sorted(set(candidates)))
        users = self.tuning_users(split)
        seen = seen_mask(split.matrix("train"), users)
        scores = part_scores(self.parts, torch.from_numpy(users), seen, self.normalise)
        grid = []
        for t in candidates:
            cold = torch.from_numpy(self.history[users] < t).unsqueeze(1)
            combined = torch.where(cold, scores[self.cold], scores[self.warm])
            grid.append((t, valid_metric(top_unseen(combined, seen, 10), users, split)))
        self.threshold, value = max(grid, key=lambda row: (row[1], -row[0]))
        self.tuning = {"threshold": self.threshold, "valid/ndcg@10": value, "grid": grid}

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        seen = self._seen(users)
        assert self.history is not None
        cold = torch.from_numpy(self.history[users.cpu().numpy()] < self.threshold).unsqueeze(1)
        names = [n for n, needed in ((self.cold, bool(cold.any())), (self.warm, not bool(cold.all()))) if needed]
        scores = part_scores({n: self.parts[n] for n in names}, users, seen, self.normalise)
        if len(names) == 1:
            return scores[names[0]].to(users.device)
        return torch.where(cold, scores[self.cold], scores[self.warm]).to(users.device)
