"""The replayed user's click model: which recommended items a user clicks, as a pure function of the list, the user's
held-out items and a seeded generator.

A position-based model (Craswell et al. 2008, "An experimental comparison of click position-bias models"): the user
examines position ``p`` (1-based) with probability ``p ** -examination_power`` and clicks an examined item exactly when
it is one of their held-out (test) items. ``examination_power = 0`` (the default) examines every position, so the
clicks are exactly the list's hits and the run is deterministic; ``1`` is the classic ``1 / p`` decay.

Clicks only decide CTR. What the user goes on to interact with (online MAP / NDCG's relevant set) is their whole
held-out set whatever they clicked: the simulator posts the unclicked held-out items as ordinary events too
(recstack.simulate.traffic), so the online relevant set is the offline one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClickModel:
    examination_power: float = 0.0
    """P(examine position p) = p ** -examination_power: 0 examines every position, 1 is 1/p."""

    def __post_init__(self) -> None:
        power = self.examination_power
        if isinstance(power, bool) or not isinstance(power, int | float) or not 0 <= power <= 10:
            raise ValueError(
                f"clicks.examination_power={power!r}: give a number between 0 (every position examined) and 10 "
                "(1 is the classic 1/p)"
            )

    def examination(self, n: int) -> np.ndarray:
        """P(examined) of positions 1..n."""
        return np.arange(1, n + 1, dtype=np.float64) ** -float(self.examination_power)

    def clicks(self, items: Sequence[str], relevant: Collection[str], rng: np.random.Generator) -> tuple[int, ...]:
        """The 1-based positions of ``items`` the user clicks, in order. ``rng`` is drawn from once per position
        whatever the outcome, so a user's draws do not depend on which items happen to be relevant."""
        draws = rng.random(len(items))
        examined = draws < self.examination(len(items))
        return tuple(p + 1 for p, item in enumerate(items) if examined[p] and item in relevant)


def user_rng(seed: int, user_idx: int) -> np.random.Generator:
    """One generator per user, from the run's seed and the user's index: a user's clicks do not depend on the order
    in which concurrent visits finish."""
    return np.random.default_rng([int(seed), int(user_idx)])
