"""One simulation end to end: offline references, visits, wait for the lake, judge online, compare per arm."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recstack.collect.settings import CollectSettings
from recstack.data.prepared import PreparedSplit
from recstack.simulate.click_model import ClickModel
from recstack.simulate.compare import ArmResult, compare_arms
from recstack.simulate.lake_sync import wait_for_lake
from recstack.simulate.online import Judged, judged_from_records, monitor_arms
from recstack.simulate.traffic import ApiKeys, SimulationError, TrafficSettings, Visit, run_traffic
from recstack.simulate.visitors import held_out_visitors

if TYPE_CHECKING:
    from recstack.simulate.offline import OfflineReference


@dataclass(frozen=True)
class SimulateSettings:
    """configs/simulate.yaml, typed (the CLI builds it; nothing here knows Hydra)."""

    traffic: TrafficSettings
    bundles: tuple[str, ...] = ()
    n_users: int | None = None
    seed: int = 0
    clicks: ClickModel = field(default_factory=ClickModel)
    wait_s: float = 120.0
    confidence: float = 0.95
    bootstrap_samples: int = 1000
    progress: bool = True
    monitor_out: str = "outputs/simulate/monitor"
    monitor_report: bool = True  # the monitor's report.html (a few seconds of plotting)
    key_envs: tuple[str, str] = ("the recommend key", "the collect key")


@dataclass(frozen=True)
class SimulationResult:
    visits: list[Visit]
    arms: list[ArmResult]
    judged: Judged  # each impression judged from the simulator's records
    references: dict[str, OfflineReference]  # by bundle tag
    n_test_users: int
    experiment: str
    ab: pd.DataFrame  # the monitor's A/B comparisons of the experiment's arms
    monitor_report: str | None
    lake_impressions: int
    records_agree: bool
    not_personalised: int
    seconds: float


def offline_references(bundles: Sequence[str], split: PreparedSplit, k: int) -> dict[str, OfflineReference]:
    """Each configured bundle's offline reference, by the tag the service's answers carry."""
    refs: dict[str, OfflineReference] = {}
    if not bundles:
        return refs
    from recstack.simulate.offline import offline_reference  # the evaluator imports torch: only when needed

    for ref in bundles:
        reference = offline_reference(str(ref), split, k)
        refs[reference.tag] = reference
    return refs


def simulate(
    split: PreparedSplit, settings: SimulateSettings, collect: CollectSettings, keys: ApiKeys
) -> SimulationResult:
    """Replay ``split``'s test users against the service at ``settings.traffic.base_url`` (its collector writing
    ``collect``'s stream, a consumer storing it in ``collect.lake``), then judge the run from the lake."""
    k = settings.traffic.k
    references = offline_references(settings.bundles, split, k)  # first: a bundle of another split fails at once
    visitors = held_out_visitors(split, settings.n_users, settings.seed)
    first_day = datetime.now(UTC).date()
    started = time.perf_counter()
    visits = run_traffic(
        visitors,
        settings.traffic,
        keys,
        settings.clicks,
        settings.seed,
        progress=settings.progress,
        key_envs=settings.key_envs,
    )
    request_ids = [v.request_id for v in visits]
    if len(set(request_ids)) != len(request_ids):
        raise SimulationError("the service answered two visits with the same request_id")
    wait_for_lake(collect, request_ids, settings.wait_s)
    seconds = time.perf_counter() - started
    experiments = {v.experiment for v in visits}
    if len(experiments) != 1:
        raise SimulationError(f"the answers name several experiments {sorted(experiments)}: run one at a time")
    experiment = experiments.pop()
    view = monitor_arms(
        collect.lake,
        settings.monitor_out,
        first_day,
        datetime.now(UTC).date(),
        k,
        confidence=settings.confidence,
        samples=settings.bootstrap_samples,
        seed=settings.seed,
        report=settings.monitor_report,
    )
    monitor = view.arms[view.arms["experiment"] == experiment]
    records = judged_from_records(visits, k)
    arms = compare_arms(
        monitor,
        records,
        visits,
        references,
        k,
        confidence=settings.confidence,
        samples=settings.bootstrap_samples,
        seed=settings.seed,
    )
    return SimulationResult(
        visits=visits,
        arms=arms,
        judged=records,
        references=references,
        n_test_users=int(np.count_nonzero(np.diff(split.matrix("test").indptr))),
        experiment=experiment,
        ab=view.ab[view.ab["experiment"] == experiment].reset_index(drop=True) if not view.ab.empty else view.ab,
        monitor_report=view.report,
        lake_impressions=int(monitor["impressions"].sum()),
        records_agree=all(a.matches_monitor for a in arms) and len(monitor) == len(arms),
        not_personalised=sum(1 for v in visits if not v.personalised or v.user_source != "trained"),
        seconds=seconds,
    )
