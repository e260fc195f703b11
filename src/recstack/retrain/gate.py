"""The gate: deploy the candidate only if it is not worse than the bundle now serving by more than a tolerance.

A pure function of the two hold-out scores. The default, NDCG@10 within 0.005 (absolute), is about the seed-to-seed
spread of one model retrained on the same data (MF on ML-100K: test NDCG@10 0.318 +- 0.003 over 3 seeds,
benchmarks/RESULTS.md) and 1.6% of that figure: a retrain no better than noise still replaces a bundle trained on
older data (so the served model does not go stale on a coin flip), while what the gate is for (a broken data window,
a bad config, a failed training) costs far more than that. Raise it to deploy more readily, set it to 0 to require
no loss at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# Float noise at the boundary: a candidate exactly `tolerance` worse passes, whatever the rounding of the subtraction.
_EPS = 1e-12


@dataclass(frozen=True)
class GateDecision:
    deploy: bool
    reason: str
    metric: str
    candidate: float
    serving: float | None
    tolerance: float

    @property
    def delta(self) -> float | None:
        """candidate - serving (None without a serving bundle)."""
        return None if self.serving is None else self.candidate - self.serving


def decide(
    candidate: Mapping[str, float],
    serving: Mapping[str, float] | None,
    *,
    metric: str = "ndcg@10",
    tolerance: float = 0.005,
) -> GateDecision:
    """Deploy when ``candidate[metric] >= serving[metric] - tolerance``, or when nothing is serving (``serving``
    None). A candidate whose figure is not a number is refused. Raises ``ValueError`` for a negative or non-finite
    tolerance and ``KeyError`` naming the metric when either side lacks it."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"gate.tolerance={tolerance}: give a finite number >= 0 (e.g. 0.005)")
    for side, scores in (("candidate", candidate), ("serving", serving)):
        if scores is not None and metric not in scores:
            raise KeyError(f"gate.metric={metric!r}: the {side}'s hold-out scores have only {sorted(scores)}")
    mine = float(candidate[metric])
    if serving is None:
        return GateDecision(True, "no bundle is serving yet: the candidate is deployed", metric, mine, None, tolerance)
    theirs = float(serving[metric])
    if math.isnan(mine):
        return GateDecision(False, f"the candidate's {metric} is not a number", metric, mine, theirs, tolerance)
    delta = mine - theirs
    if delta >= -tolerance - _EPS:
        how = "better than" if delta > 0 else "within the tolerance of"
        reason = f"{metric} {mine:.4f} vs {theirs:.4f} ({delta:+.4f}): {how} the serving bundle"
        return GateDecision(True, reason, metric, mine, theirs, tolerance)
    reason = (
        f"{metric} {mine:.4f} vs {theirs:.4f} ({delta:+.4f}): worse than the serving bundle by more than {tolerance}"
    )
    return GateDecision(False, reason, metric, mine, theirs, tolerance)
