"""Cascade hybrid: the ``retrieval`` part's top ``n_candidates`` unseen items, re-ranked by
``(1 - w) * z(retrieval) + w * z(ranker)``, both z-scored over the user's candidates (the served pipeline's blend,
:class:`recstack.serving.pipeline.PipelineConfig`, over any two parts).

``weight`` fixes ``w``; else it is the point of ``grid`` with the best validation NDCG@10 (ties: the smaller weight,
i.e. the less re-ranking). Items outside the candidates rank below them, in retrieval order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from recstack.data.prepared import PreparedSplit
from recstack.hybrids.base import Hybrid, below_candidates, top_unseen, valid_metric
from recstack.hybrids.parts import DEFAULT_RUNS_ROOT, Normalisation, check_two_parts, part_scores, seen_mask

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


def candidate_zscore(scores: torch.Tensor, is_candidate: torch.Tensor) -> torch.Tensor:
    """Scores z-scored over each row's candidates (0 elsewhere)."""
    count = is_candidate.sum(dim=1, keepdim=True).clamp(min=1)
    mean = torch.where(is_candidate, scores, 0.0).sum(dim=1, keepdim=True) / count
    var = torch.where(is_candidate, (scores - mean) ** 2, 0.0).sum(dim=1, keepdim=True) / count
    return torch.where(is_candidate, (scores - mean) / var.sqrt().clamp(min=1e-12), 0.0)


class CascadeHybrid(Hybrid):
    """``retrieval`` picks ``n_candidates`` per user, ``ranker`` re-ranks them with the blend weight ``weight``
    (tuned over ``grid`` when null). Other arguments: see :class:`~recstack.hybrids.base.Hybrid`."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        retrieval: str = "lightgcn",
        ranker: str = "ease",
        n_candidates: int = 100,
        weight: float | None = None,
        grid: Sequence[float] = DEFAULT_GRID,
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
            check_two_parts({"retrieval": retrieval, "ranker": ranker}, "cascade"),
            runs=runs,
            runs_root=runs_root,
            train_overrides=train_overrides,
            normalise=normalise,
            tune_users=tune_users,
            seed=seed,
        )
        if n_candidates < 1:
            raise ValueError(f"n_candidates={n_candidates} must be >= 1 (a catalogue smaller than it is taken whole)")
        for w in (weight,) if weight is not None else tuple(grid):
            if not 0.0 <= w <= 1.0:
                raise ValueError(f"blend weight {w} must be within [0, 1]")
        if weight is None and not grid:
            raise ValueError("grid is empty; give blend weights to try, or a fixed weight")
        self.retrieval, self.ranker = retrieval, ranker
        self.n_candidates = n_candidates
        self.fixed = weight
        self.grid = tuple(float(w) for w in grid)
        self.weight = 0.0 if weight is None else float(weight)

    def _blend(self, scores: dict[str, torch.Tensor], seen: torch.Tensor, weight: float) -> torch.Tensor:
        retrieval = scores[self.retrieval].masked_fill(seen, -torch.inf)
        k = min(self.n_candidates, retrieval.shape[1])
        top = torch.topk(retrieval, k, dim=1).indices
        is_candidate = torch.zeros_like(seen).scatter_(1, top, True) & ~seen
        blended = (1 - weight) * candidate_zscore(scores[self.retrieval], is_candidate) + weight * candidate_zscore(
            scores[self.ranker], is_candidate
        )
        return below_candidates(blended, is_candidate, scores[self.retrieval])

    def _tune(self, split: PreparedSplit) -> None:
        if self.fixed is not None:
            self.tuning = {"weight": self.weight, "tuned": False}
            return
        users = self.tuning_users(split)
        seen = seen_mask(split.matrix("train"), users)
        scores = part_scores(self.parts, torch.from_numpy(users), seen, self.normalise)
        grid = [(w, valid_metric(top_unseen(self._blend(scores, seen, w), seen, 10), users, split)) for w in self.grid]
        self.weight, value = max(grid, key=lambda row: (row[1], -row[0]))
        self.tuning = {"weight": self.weight, "valid/ndcg@10": value, "grid": grid, "tuned": True}

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        seen = self._seen(users)
        return self._blend(part_scores(self.parts, users, seen, self.normalise), seen, self.weight).to(users.device)
