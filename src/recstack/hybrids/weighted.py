"""Weighted hybrid: ``sum_p w_p * norm_p(u, i)``, each part's scores normalised per user, weights on the simplex.

Normalisation (z-score by default, or min-max) is over the items the user has not seen, so parts on different scales
(popularity ranks, EASE regressions, embedding dot products) add up. The weights are the point of a grid over the
simplex (multiples of ``step`` summing to 1) with the best validation NDCG@10; or fixed with ``weights``, in which
case nothing is tuned. With one part's weight 1, the hybrid ranks exactly as that part does.

A part abstains on the items it cannot score (:func:`~recstack.hybrids.parts.known_items`: a collaborative part on
items without a training interaction): an item's score is the weighted mean over the parts that know it, so a cold
item is judged by its content score on the same scale as a warm item's blend, instead of by a collaborative default.
An item every part knows gets exactly the weighted sum; one no part knows keeps the plain weighted sum.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence

import torch

from recstack.data.prepared import PreparedSplit
from recstack.hybrids.base import Hybrid, top_unseen, valid_metric
from recstack.hybrids.parts import DEFAULT_RUNS_ROOT, Normalisation, part_scores, seen_mask


def simplex_grid(n_parts: int, step: float) -> Iterator[tuple[float, ...]]:
    """Every weight vector of ``n_parts`` non-negative multiples of ``step`` that sums to 1 (stars and bars)."""
    if not 0 < step <= 1:
        raise ValueError(f"step={step} must be in (0, 1]")
    units = round(1 / step)
    if abs(units * step - 1) > 1e-9:
        raise ValueError(f"step={step} must divide 1 (e.g. 0.1, 0.05, 0.25)")
    for bars in itertools.combinations(range(units + n_parts - 1), n_parts - 1):
        edges = (-1, *bars, units + n_parts - 1)
        yield tuple((edges[i + 1] - edges[i] - 1) / units for i in range(n_parts))


class WeightedHybrid(Hybrid):
    """``parts`` combined by normalised scores; ``weights`` (part -> weight) fixes them, else they are tuned over the
    simplex with ``step``. Other arguments: see :class:`~recstack.hybrids.base.Hybrid`."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        parts: Sequence[str],
        weights: Mapping[str, float] | None = None,
        step: float = 0.1,
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
            parts,
            runs=runs,
            runs_root=runs_root,
            train_overrides=train_overrides,
            normalise=normalise,
            tune_users=tune_users,
            seed=seed,
        )
        if weights is not None:
            unknown = sorted(set(weights) - set(self.part_names))
            if unknown:
                raise ValueError(f"weights name {unknown}, which are not parts {list(self.part_names)}")
            if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValueError(f"weights {dict(weights)} must be >= 0 with a positive sum")
        next(simplex_grid(len(self.part_names), step))  # checks step now, not at fit time
        self.fixed = None if weights is None else {n: float(weights.get(n, 0.0)) for n in self.part_names}
        self.step = step
        self.weights: dict[str, float] = dict(self.fixed or {})

    def _tune(self, split: PreparedSplit) -> None:
        if self.fixed is not None:
            self.weights = dict(self.fixed)
            self.tuning = {"weights": self.weights, "tuned": False}
            return
        users = self.tuning_users(split)
        seen = seen_mask(split.matrix("train"), users)
        scores = part_scores(self.parts, torch.from_numpy(users), seen, self.normalise)
        grid: list[tuple[tuple[float, ...], float]] = []
        for w in simplex_grid(len(self.part_names), self.step):
            combined = blend(dict(zip(self.part_names, w)), scores, self.known)
            grid.append((w, valid_metric(top_unseen(combined, seen, 10), users, split)))
        best, value = max(grid, key=lambda row: row[1])  # ties: the first in grid order
        self.weights = dict(zip(self.part_names, best))
        self.tuning = {"weights": self.weights, "valid/ndcg@10": value, "grid_size": len(grid), "tuned": True}

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        seen = self._seen(users)
        active = {n: self.parts[n] for n, w in self.weights.items() if w > 0}
        scores = part_scores(active, users, seen, self.normalise)
        return blend({n: self.weights[n] for n in active}, scores, self.known).to(users.device)


def blend(
    weights: Mapping[str, float], scores: Mapping[str, torch.Tensor], known: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """``sum_p w_p k_p s_p / sum_p w_p k_p`` per item (``k_p``: whether part ``p`` knows the item), where that weight
    is positive; the plain ``sum_p w_p s_p`` where no weighted part knows the item."""
    plain = sum(w * scores[n] for n, w in weights.items())
    knowing = sum(w * known[n].float() for n, w in weights.items())  # (items,)
    if not isinstance(plain, torch.Tensor) or not isinstance(knowing, torch.Tensor):
        raise ValueError("a weighted blend needs at least one part")
    if bool((knowing == sum(weights.values())).all()):
        return plain  # every part knows every item: the weighted sum as it is
    masked = sum(w * scores[n] * known[n].float() for n, w in weights.items())
    assert isinstance(masked, torch.Tensor)
    return torch.where(knowing > 0, masked / knowing.clamp(min=1e-12), plain)
