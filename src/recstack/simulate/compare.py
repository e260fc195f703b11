"""Per arm: the monitor's online figures with their sampling error beside the offline evaluator's figures for the
arm's bundle (pure, from the monitor's per-arm rows, the judged records, the visits and the offline references).

MAP@k's interval is the monitor's (a percentile bootstrap over users, recstack.monitoring.significance); the monitor
states none for one arm's CTR, so CTR@k's is the same bootstrap (``estimate_arm``) over the simulator's records, whose
figures equal the monitor's when nothing was lost on the way (``matches_monitor``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recstack.monitoring.significance import estimate_arm
from recstack.simulate.online import Judged
from recstack.simulate.traffic import Visit

if TYPE_CHECKING:
    from recstack.simulate.offline import OfflineReference

EXACT = 1e-9  # float error of two means of the same per-user values


@dataclass(frozen=True)
class ArmResult:
    """One arm (and the bundle that served it) over the run's users.

    ``map`` / ``ndcg`` are the monitor's online MAP@k / NDCG@k over the judged impressions (those with a later
    interaction), ``map_ci`` its bootstrap interval over users; ``ctr`` the monitor's share of impressions with a
    click in the top k, ``ctr_ci`` the same bootstrap over the records. ``offline_map`` is the bundle's offline MAP@k on exactly these users,
    ``offline_map_all`` on every test user, ``offline_hit`` its HitRate@k on these users (what CTR equals when every
    position is examined). ``agrees``: the offline MAP@k on these users lies inside the online interval (None: no
    offline reference for this bundle); ``exact``: it equals the online figure to float error.
    ``matches_monitor``: the monitor's counts and figures equal the simulator's records."""

    arm: str
    bundle: str
    impressions: int
    judged: int
    ctr: float
    ctr_ci: tuple[float, float]
    map: float
    map_ci: tuple[float, float]
    ndcg: float
    offline_map: float | None
    offline_map_all: float | None
    offline_hit: float | None
    offline_mode: str | None
    agrees: bool | None
    exact: bool | None
    matches_monitor: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= EXACT


def compare_arms(
    monitor: pd.DataFrame,
    records: Judged,
    visits: Sequence[Visit],
    references: Mapping[str, OfflineReference],
    k: int,
    *,
    confidence: float = 0.95,
    samples: int = 1000,
    seed: int = 0,
) -> list[ArmResult]:
    """One :class:`ArmResult` per arm the simulation was served by, sorted by name. ``monitor``: the monitor's
    per-arm rows for the run's experiment (:attr:`recstack.simulate.online.MonitorView.arms`); ``references`` maps a
    bundle tag (what answers carry as ``model``) to its offline reference."""
    alpha = 1.0 - confidence
    user_of = {v.request_id: v.visitor.user_idx for v in visits}
    by_arm = {str(r.arm): r for r in monitor.itertuples(index=False)}
    out = []
    for i, arm in enumerate(sorted({str(a) for a in records.arms})):
        mine = records.take(np.flatnonzero(records.arms == arm))
        bundles = sorted({str(b) for b in mine.bundles})
        rated = mine.n_relevant > 0
        ap = mine.metric("map", k)
        clicked = mine.clicked.astype(np.float64)
        ctr_est = estimate_arm(clicked, np.ones(len(clicked)), samples, alpha, np.random.default_rng([seed, i]))
        row = by_arm.get(arm)
        online_map = float(row.map) if row is not None else math.nan
        online_ctr = float(row.ctr) if row is not None else math.nan
        matches = (
            row is not None
            and int(row.impressions) == len(mine)
            and int(row.judged) == int(rated.sum())
            and _close(online_map, float(ap.mean()) if len(ap) else math.nan)
            and _close(online_ctr, float(clicked.mean()))
        )
        ref = references.get(bundles[0]) if len(bundles) == 1 else None  # a swap mid-run: no single reference
        map_ci = (float(row.map_ci_low), float(row.map_ci_high)) if row is not None else (math.nan, math.nan)
        offline_map = offline_all = offline_hit = None
        agrees = exact = None
        if ref is not None and len(ap):
            users = np.array([user_of[r] for r in mine.request_ids[rated]], dtype=np.int64)
            offline_map = float(ref.on("map", users).mean())
            offline_hit = float(ref.on("hit", users).mean())
            offline_all = ref.overall["map"]
            exact = _close(offline_map, online_map)
            agrees = exact or map_ci[0] - EXACT <= offline_map <= map_ci[1] + EXACT
        out.append(
            ArmResult(
                arm=arm,
                bundle=", ".join(bundles),
                impressions=int(row.impressions) if row is not None else 0,
                judged=int(row.judged) if row is not None else 0,
                ctr=online_ctr,
                ctr_ci=(ctr_est.ci_low, ctr_est.ci_high),
                map=online_map,
                map_ci=map_ci,
                ndcg=float(row.ndcg) if row is not None else math.nan,
                offline_map=offline_map,
                offline_map_all=offline_all,
                offline_hit=offline_hit,
                offline_mode=None if ref is None else ref.mode,
                agrees=agrees,
                exact=exact,
                matches_monitor=bool(matches),
            )
        )
    return out


def format_arms(arms: Sequence[ArmResult], k: int, confidence: float, n_test_users: int) -> str:
    """The per-arm table the simulator prints."""
    level = f"{confidence:.0%}"
    head = (
        f"  {'arm':<10} {'bundle':<24} {'users':>5}  {f'CTR@{k} [{level} CI]':<23} {f'online MAP@{k} [{level} CI]':<28}"
        f" {f'offline MAP@{k}: same users | all {n_test_users}':<33} agrees"
    )
    lines = [head]
    for a in arms:
        ctr = f"{a.ctr:.3f} [{a.ctr_ci[0]:.3f}, {a.ctr_ci[1]:.3f}]"
        online = f"{a.map:.4f} [{a.map_ci[0]:.4f}, {a.map_ci[1]:.4f}]"
        if a.offline_map is None:
            offline, verdict = "(no reference: pass bundles=[...])", "-"
        else:
            offline = f"{a.offline_map:.4f} | {a.offline_map_all:.4f}"
            verdict = ("yes (exact)" if a.exact else "yes") if a.agrees else "NO"
        lines.append(
            f"  {a.arm or '-':<10} {a.bundle[:24]:<24} {a.impressions:>5}  {ctr:<23} {online:<28} {offline:<33} {verdict}"
        )
    return "\n".join(lines)


def format_ab(ab: pd.DataFrame, experiment: str) -> str:
    """The monitor's A/B verdicts for ``experiment``, one line per comparison ('' when there are none)."""
    if ab.empty:
        return ""
    lines = []
    for row in ab[ab["experiment"] == experiment].itertuples(index=False):
        verdict = "significant" if row.significant else "not significant"
        lines.append(
            f"  A/B {row.arm} vs {row.control}: {row.metric} {row.diff:+.4f} [{row.ci_low:+.4f}, {row.ci_high:+.4f}] "
            f"({row.method}): {verdict}"
        )
    return "\n".join(lines)
