"""One monitoring run: the lake's impressions of a window joined to what followed, measured, compared, checked and
written out (``recstack-monitor``; recstack.cli.monitor is its command line).

Outputs under ``out``: ``daily.parquet`` (the metrics per day, bundle, experiment, arm and segment), ``drift.parquet``
(PSI per day and series), ``summary.json`` (the reported day, per-arm estimates with intervals, the A/B comparisons,
the alerts, the run's settings and timings), ``report.html`` (recstack.monitoring.report) and ``metrics.prom``
(recstack.monitoring.prometheus). Each file is written to a temporary name and renamed.

``engine``: the joins of impressions to events (attribution and the outcome pairs, recstack.monitoring.attribution)
run on DuckDB, or on Spark from the same SQL (``engine=spark``: recstack.monitoring.monitor_spark); the load and
everything after the joins run on DuckDB and numpy either way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recstack.monitoring import lake_tables
from recstack.monitoring.alerts import Alert, drift_alerts, metric_drop_alerts
from recstack.monitoring.attribution import attribute
from recstack.monitoring.drift import drift_table
from recstack.monitoring.lake_tables import Loaded, day_number, day_of
from recstack.monitoring.online_metrics import (
    ALL_USERS,
    catalogue_metrics,
    group_metrics,
    per_user_sums,
    served_items,
    served_scores,
)
from recstack.monitoring.per_impression import judged_values, load_impressions
from recstack.monitoring.significance import ab_table, arm_estimates
from recstack.monitoring.spec import DAY_MS, ABSpec, AlertRules, MetricSpec, MonitorError

if TYPE_CHECKING:
    from recstack.data.spark_engine import SparkEngine

log = logging.getLogger("recstack.monitoring")
SERIES = ["bundle", "experiment", "arm"]


@dataclass
class MonitorRun:
    """What a run measured (tables keep ``day`` as an ISO date string) and where it wrote it."""

    day: date
    first_day: date  # of the report window (the reference days before it are loaded too)
    loaded: Loaded
    daily: pd.DataFrame
    drift: pd.DataFrame
    arms: pd.DataFrame
    ab: pd.DataFrame
    alerts: list[Alert]  # firing on the reported day
    earlier_alerts: list[Alert]  # what the same rules say about the window's earlier days
    traffic: dict[str, int]  # impressions per day of the window (zeros included)
    outcome_complete: bool  # the reported day's outcome window is over (collection has passed it)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def day_rows(self) -> pd.DataFrame:
        """The reported day's all-users rows (one per bundle/experiment/arm)."""
        d = self.daily
        return d[(d["day"] == self.day.isoformat()) & (d["segment"] == ALL_USERS)].reset_index(drop=True)


class _Steps:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - start, 3)
        log.info("%s: %.1f s", name, self.seconds[name])
        return out


def _check_ks(spec: MetricSpec, rules: AlertRules, ab: ABSpec) -> None:
    for where, metric in (("alerts.metric", rules.metric), ("ab.metric", ab.metric)):
        k = int(metric.split("@")[1])
        if k not in spec.ks:
            raise MonitorError(f"{where}={metric} needs K={k} among ks={list(spec.ks)}; add it to ks")
    if ab.ctr_k not in spec.ks:
        raise MonitorError(f"ab.ctr_k={ab.ctr_k} must be one of ks={list(spec.ks)}")


def _hashed_membership(con, membership: pd.DataFrame | None) -> pd.DataFrame | None:
    """The membership table with user ids hashed the way the impressions' are (DuckDB's hash)."""
    if membership is None or membership.empty:
        return None
    con.register("membership_frame", membership[["user_id", "segment"]].astype(str))
    frame = con.execute("SELECT DISTINCT hash(user_id) AS uid, segment FROM membership_frame").df()
    con.unregister("membership_frame")
    return frame


def _zero_rows(daily: pd.DataFrame, day: int, first: int) -> pd.DataFrame:
    """Rows with no traffic for the series seen in the window but silent on ``day``: a dashboard sees the drop."""
    seen = daily[(daily["segment"] == ALL_USERS) & (daily["day"] >= first)][SERIES].drop_duplicates()
    today = daily[(daily["segment"] == ALL_USERS) & (daily["day"] == day)][SERIES]
    missing = seen.merge(today, how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"].drop(columns="_merge")
    if missing.empty:
        return daily
    rows = missing.assign(day=day, segment=ALL_USERS)
    counted = ("impressions", "users", "judged", "conversions", "clicked", "clicks", "shown")
    for column in (c for c in daily.columns if c.split("@")[0] in counted):
        rows[column] = 0
    return pd.concat([daily, rows], ignore_index=True)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(temp, index=False)
    os.replace(temp, path)


def _write_text(text: str, path: Path) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def _plain(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [_plain(row) for row in frame.to_dict("records")]


def run_monitor(
    lake: str | Path,
    out: str | Path,
    *,
    day: date | None = None,
    days: int = 14,
    spec: MetricSpec | None = None,
    rules: AlertRules | None = None,
    ab: ABSpec | None = None,
    membership: pd.DataFrame | None = None,
    segments_source: str | None = None,
    threads: int | None = None,
    memory_limit: str | None = None,
    drop_bots: bool = True,
    pushgateway: str | None = None,
    prometheus_file: str | Path | None = None,
    report: bool = True,
    engine: SparkEngine | None = None,
) -> MonitorRun:
    """Measure the ``days`` days ending on ``day`` (default: the latest day holding impressions) and write the
    outputs (module docstring). ``membership``: ``(user_id, segment)`` rows for the per-segment breakdown;
    ``prometheus_file``: where the gauges go (default ``<out>/metrics.prom``); ``engine``: a
    :class:`~recstack.data.spark_engine.SparkEngine` runs the joins on Spark (the caller closes it), ``None`` on
    DuckDB."""
    spec, rules, ab = spec or MetricSpec(), rules or AlertRules(), ab or ABSpec()
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 366:
        raise MonitorError(f"days={days!r}: give the number of days to report, between 1 and 366")
    _check_ks(spec, rules, ab)
    steps = _Steps()
    available = lake_tables.check_lake(lake)
    target = day or available[-1]
    first = target - timedelta(days=days - 1)
    load_first = first - timedelta(days=rules.reference_days)
    t_day, t_first = day_number(target), day_number(first)
    report_days = list(range(t_first, t_day + 1))
    notes: list[str] = []
    if target not in available:
        notes.append(f"no impressions were served on {target.isoformat()}: zero traffic")

    # The session starts before the lake is read: a missing Java or PySpark fails in a second, not after the load.
    spark = steps.run("start spark", lambda: engine.spark) if engine is not None else None
    con = lake_tables.connect(threads, memory_limit)
    try:
        loaded = steps.run("load", lake_tables.load, con, lake, load_first, target, spec, drop_bots=drop_bots)
        pairs = None  # DuckDB computes the outcome pairs in the per-impression step
        if spark is None:
            steps.run("attribute", attribute, con, spec)
        else:
            from recstack.monitoring.monitor_spark import spark_joins

            _, pairs = steps.run("attribute and outcome pairs (Spark)", spark_joins, spark, con, spec)
        imps = steps.run("per impression", load_impressions, con, spec, pairs)

        def values() -> dict[str, np.ndarray]:
            judged, per_judged = judged_values(imps, spec.ks)
            full = {}
            for name, column in per_judged.items():
                array = np.zeros(len(imps))
                array[judged] = column
                full[name] = array
            return full

        ranking = steps.run("ranking metrics", values)
        hashed = _hashed_membership(con, membership)
        daily = steps.run("group metrics", group_metrics, imps, ranking, spec, hashed)
        served = steps.run("served items", served_items, con, spec)
        scores = steps.run("served scores", served_scores, con)
        newest = lake_tables.newest_event_ms(con, lake)
        users = (
            steps.run("per-user sums", per_user_sums, imps, ranking, ab.metric, t_first, t_day) if len(imps) else None
        )
    finally:
        con.close()

    catalogue = catalogue_metrics(served, spec.catalogue_size)
    if daily.empty:
        daily = pd.DataFrame(columns=["day", *SERIES, "segment", "impressions", "users"])
    daily = _zero_rows(daily, t_day, t_first)
    daily = daily.merge(catalogue.assign(segment=ALL_USERS), on=["day", *SERIES, "segment"], how="left")
    complete_until = -1 if newest is None else newest - spec.outcome_window_ms
    daily["outcome_complete"] = (daily["day"].astype(np.int64) + 1) * DAY_MS <= complete_until
    all_rows = daily[daily["segment"] == ALL_USERS]

    counts = all_rows[["day", *SERIES, "impressions"]]
    pop_samples = served.rename(columns={"popularity": "value", "served": "weight"})[
        ["day", *SERIES, "value", "weight"]
    ]
    drift = pd.concat(
        [
            drift_table(scores, counts, report_days, rules.reference_days, rules.psi_bins, "scores"),
            drift_table(pop_samples, counts, report_days, rules.reference_days, rules.psi_bins, "popularity"),
        ],
        ignore_index=True,
    )

    window = all_rows[all_rows["day"].between(t_first, t_day)]
    ctr_column = f"clicked@{ab.ctr_k}"
    pooled = (
        window.groupby(["experiment", "arm"], as_index=False).agg(
            impressions=("impressions", "sum"), clicked=(ctr_column, "sum"), bundles=("bundle", "unique")
        )
        if not window.empty and ctr_column in window
        else pd.DataFrame(columns=["experiment", "arm", "impressions", "clicked", "bundles"])
    )
    estimates = arm_estimates(users, ab.metric, ab.samples, ab.alpha, ab.seed) if users is not None else {}
    arms = _arms_table(pooled, estimates, ab)
    comparisons = ab_table(pooled, estimates, ctr_k=ab.ctr_k, metric=ab.metric, alpha=ab.alpha, control=ab.control)

    all_alerts = metric_drop_alerts(all_rows, rules, report_days) + drift_alerts(drift, rules, report_days)
    alerts = [a for a in all_alerts if a.day == t_day]
    earlier = [a for a in all_alerts if a.day != t_day]
    traffic = {day_of(d).isoformat(): int(all_rows.loc[all_rows["day"] == d, "impressions"].sum()) for d in report_days}
    outcome_complete = bool((t_day + 1) * DAY_MS <= complete_until)
    if not outcome_complete and traffic[target.isoformat()]:
        notes.append(
            f"the outcome window ({spec.outcome_window_ms / 3_600_000:g} h) of {target.isoformat()} is not over in "
            "the lake yet: MAP/NDCG are provisional and the MAP-drop alert is not judged"
        )

    # Tables leave with dates, not day numbers.
    report_rows = daily[daily["day"].between(t_first, t_day)].copy()
    report_rows["day"] = report_rows["day"].map(lambda d: day_of(int(d)).isoformat())
    drift = drift.copy()
    drift["day"] = drift["day"].map(lambda d: day_of(int(d)).isoformat())
    run = MonitorRun(
        day=target,
        first_day=first,
        loaded=loaded,
        daily=report_rows.reset_index(drop=True),
        drift=drift,
        arms=arms,
        ab=comparisons,
        alerts=alerts,
        earlier_alerts=earlier,
        traffic=traffic,
        outcome_complete=outcome_complete,
        notes=notes,
        seconds=steps.seconds,
        settings={
            "lake": str(lake),
            "metrics": asdict(spec),
            "alerts": asdict(rules),
            "ab": asdict(ab),
            "segments": segments_source,
            "drop_bots": drop_bots,
            "engine": "duckdb" if engine is None else engine.name,
        },
    )
    steps.run(
        "write", write_outputs, run, Path(out), spec, report=report, pushgateway=pushgateway, prom_file=prometheus_file
    )
    run.seconds = steps.seconds
    _write_text(json.dumps(summary(run), indent=1) + "\n", Path(out) / "summary.json")
    return run


def _arms_table(pooled: pd.DataFrame, estimates: dict, ab: ABSpec) -> pd.DataFrame:
    rows = []
    for row in pooled.itertuples(index=False):
        estimate = estimates.get((str(row.experiment), str(row.arm)))
        rows.append(
            {
                "experiment": row.experiment,
                "arm": row.arm,
                "bundles": ", ".join(sorted(map(str, row.bundles))),
                "impressions": int(row.impressions),
                f"ctr@{ab.ctr_k}": row.clicked / row.impressions if row.impressions else math.nan,
                "users_judged": estimate.users if estimate else 0,
                "judged": estimate.judged if estimate else 0,
                ab.metric: estimate.value if estimate else math.nan,
                "ci_low": estimate.ci_low if estimate else math.nan,
                "ci_high": estimate.ci_high if estimate else math.nan,
            }
        )
    return pd.DataFrame(rows)


def _alert_dict(alert: Alert) -> dict[str, Any]:
    return _plain({**alert.as_dict(), "day": day_of(alert.day).isoformat()})


def summary(run: MonitorRun) -> dict[str, Any]:
    """What summary.json holds (and the CLI prints from)."""
    day = run.day.isoformat()
    return {
        "day": day,
        "window": [run.first_day.isoformat(), day],
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "loaded": _plain(
            asdict(run.loaded)
            | {"first_day": run.loaded.first_day.isoformat(), "last_day": run.loaded.last_day.isoformat()}
        ),
        "traffic": run.traffic,
        "outcome_complete": run.outcome_complete,
        "day_metrics": _records(run.day_rows),
        "arms": _records(run.arms),
        "ab": _records(run.ab),
        "drift": _records(run.drift[run.drift["day"] == day]),
        "alerts": [_alert_dict(a) for a in run.alerts],
        "earlier_alerts": [_alert_dict(a) for a in run.earlier_alerts],
        "notes": run.notes,
        "seconds": run.seconds,
        "outputs": run.paths,
        "settings": _plain(run.settings),
    }


def write_outputs(
    run: MonitorRun,
    out: Path,
    spec: MetricSpec,
    *,
    report: bool = True,
    pushgateway: str | None = None,
    prom_file: str | Path | None = None,
) -> dict[str, str]:
    """daily.parquet, drift.parquet, metrics.prom and report.html (summary.json is written last, by the caller)."""
    from recstack.monitoring import prometheus

    out.mkdir(parents=True, exist_ok=True)
    prom = Path(prom_file).expanduser() if prom_file else out / "metrics.prom"
    paths = {"daily": out / "daily.parquet", "drift": out / "drift.parquet", "prometheus": prom}
    _write_parquet(run.daily, paths["daily"])
    _write_parquet(run.drift, paths["drift"])
    day = run.day.isoformat()
    day_start = datetime(run.day.year, run.day.month, run.day.day, tzinfo=UTC).timestamp()
    registry = prometheus.build_registry(
        run.day_rows,
        run.drift[run.drift["day"] == day],
        run.alerts,
        ks=spec.ks,
        day_start_s=day_start,
        day_impressions=run.traffic.get(day, 0),
    )
    prometheus.write(registry, paths["prometheus"], pushgateway)
    if report:
        from recstack.monitoring.report import write_report

        paths["report"] = write_report(run, out / "report.html", spec)
    paths["summary"] = out / "summary.json"
    run.paths = {name: str(path) for name, path in paths.items()}
    return run.paths
