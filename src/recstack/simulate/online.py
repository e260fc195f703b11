"""The online side of a simulation: each arm's CTR@k and MAP@k as the monitor reads them from the lake, and each
impression judged from the simulator's own records.

* :func:`monitor_arms`: the per-arm figures the monitor itself reads back from the event lake (a
  ``recstack-monitor`` run: impressions joined to the events that followed them, CTR@k, MAP@k / NDCG@k, and the
  per-arm bootstrap intervals over users);
* :func:`judged_from_records`: each impression judged from what the simulator itself sent and was answered (pure):
  ``request_id, arm, bundle, n_relevant, hits (bool, k columns), clicked``, with the offline evaluator's own metric
  functions (recstack.evaluation.metrics) over those hits. It gives the per-user values the intervals resample and
  the offline comparison reads user by user; the monitor's figures must equal its means (nothing lost, duplicated or
  misattributed between the service, the stream, the consumer and the lake).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from recstack.evaluation.metrics import map_, ndcg
from recstack.simulate.traffic import Visit


@dataclass(frozen=True)
class Judged:
    """Impressions judged online, one row each (arrays in the same order)."""

    request_ids: np.ndarray  # object (str)
    arms: np.ndarray  # object (str); '' without an experiment
    bundles: np.ndarray  # object (str): the bundle tag that served the list
    n_relevant: np.ndarray  # int64: distinct items interacted with after the impression (0: not judged)
    hits: np.ndarray  # bool (n, k): position j holds one of them
    clicked: np.ndarray  # bool: at least one click attributed to the list within the top k

    def __len__(self) -> int:
        return len(self.request_ids)

    def take(self, rows: np.ndarray) -> Judged:
        return Judged(
            self.request_ids[rows],
            self.arms[rows],
            self.bundles[rows],
            self.n_relevant[rows],
            self.hits[rows],
            self.clicked[rows],
        )

    def metric(self, name: str, k: int) -> np.ndarray:
        """Per-impression ``map@k`` or ``ndcg@k`` (the offline evaluator's definitions) of the judged rows (those
        with at least one later interaction; the others have no relevant set to rank against)."""
        judged = self.n_relevant > 0
        fn = {"map": map_, "ndcg": ndcg}[name]
        return fn(self.hits[judged], self.n_relevant[judged], k)


def judged_from_records(visits: Sequence[Visit], k: int) -> Judged:
    """What the simulator sent and was answered: each list's hits against the visitor's held-out set (all of which
    the visit posted after the impression), clicked when a click fell within the top ``k``."""
    hits = np.zeros((len(visits), k), dtype=bool)
    for row, visit in enumerate(visits):
        relevant = set(visit.visitor.test_items)
        for j, item in enumerate(visit.items[:k]):
            hits[row, j] = item in relevant
    return Judged(
        request_ids=np.array([v.request_id for v in visits], dtype=object),
        arms=np.array([v.arm for v in visits], dtype=object),
        bundles=np.array([v.model for v in visits], dtype=object),
        n_relevant=np.array([len(v.visitor.test_items) for v in visits], dtype=np.int64),
        hits=hits,
        clicked=np.array([any(p <= k for p in v.clicks) for v in visits], dtype=bool),
    )


@dataclass(frozen=True)
class MonitorView:
    """What the monitor reported on the run's days: ``arms``, one row per ``(experiment, arm)`` pooled over the days
    (``bundles``, ``impressions``, ``clicked``, ``ctr``, ``judged``, ``map`` and ``ndcg`` at k, and ``map_ci_low`` /
    ``map_ci_high``, the monitor's bootstrap interval over users), its A/B comparisons (``ab``: each arm against the
    control, CTR@k by a two-proportion z-test and MAP@k by the bootstrap, with the difference's interval and whether
    it is significant), and where it wrote its report."""

    arms: pd.DataFrame
    ab: pd.DataFrame
    report: str | None


def monitor_arms(
    lake: str | Path,
    out: str | Path,
    first_day: date,
    last_day: date,
    k: int,
    *,
    confidence: float = 0.95,
    samples: int = 1000,
    seed: int = 0,
    report: bool = True,
) -> MonitorView:
    """Run the monitor (:func:`recstack.monitoring.job.run_monitor`, its default attribution and outcome rules) over
    the impressions served on ``[first_day, last_day]`` (UTC), writing its outputs (report.html, summary.json, ...)
    under ``out`` (``report``: also its HTML report), and read its per-arm figures at ``k``."""
    from recstack.monitoring.job import run_monitor
    from recstack.monitoring.online_metrics import ALL_USERS
    from recstack.monitoring.spec import ABSpec, AlertRules, MetricSpec

    metric = f"map@{k}"
    run = run_monitor(
        lake,
        out,
        day=last_day,
        days=(last_day - first_day).days + 1,
        spec=MetricSpec(ks=(k,)),
        rules=AlertRules(metric=metric),
        ab=ABSpec(alpha=1.0 - confidence, ctr_k=k, metric=metric, samples=samples, seed=seed),
        report=report,
    )
    keys = ["experiment", "arm"]
    daily = run.daily[run.daily["segment"] == ALL_USERS]
    judged = daily["judged"].astype(np.float64)
    quality = (
        daily.assign(ndcg_sum=daily[f"ndcg@{k}"].astype(np.float64).fillna(0.0) * judged)
        .groupby(keys, as_index=False)
        .agg(clicked=(f"clicked@{k}", "sum"), ndcg_sum=("ndcg_sum", "sum"), judged_all=("judged", "sum"))
    )
    arms = run.arms.merge(quality, on=keys, how="left")
    arms = arms.rename(columns={f"ctr@{k}": "ctr", metric: "map", "ci_low": "map_ci_low", "ci_high": "map_ci_high"})
    arms["ndcg"] = arms["ndcg_sum"] / arms["judged_all"].where(arms["judged_all"] > 0)
    arms = arms.drop(columns=["ndcg_sum", "judged_all"]).astype({"experiment": str, "arm": str})
    return MonitorView(arms=arms, ab=run.ab, report=run.paths.get("report"))
