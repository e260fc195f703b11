"""The alert rules (recstack.monitoring.spec.AlertRules) over the daily metrics and the drift table: pure functions.

* ``metric_drop``: a series' (bundle, experiment, arm; all users) online ``map@10`` on a day is more than
  ``max_drop`` below the mean of its daily values over the previous ``reference_days`` days. Judged only when the
  day has ``min_eligible`` judged impressions and a complete outcome window (a day whose later interactions are still
  arriving reads low, and must not page anyone), and at least ``min_reference_days`` earlier days have a value.
* ``psi``: a served-score or served-popularity PSI of a day above ``psi_threshold``, both the day and its reference
  holding at least ``min_impressions`` impressions.

A run exits with :data:`ALERT_EXIT_CODE` when an alert fires on the day it reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd

from recstack.monitoring.spec import AlertRules

ALERT_EXIT_CODE = 3
SERIES_KEYS: tuple[str, ...] = ("bundle", "experiment", "arm")


@dataclass(frozen=True)
class Alert:
    day: int  # UTC day number
    kind: str  # metric_drop | psi
    bundle: str
    experiment: str
    arm: str
    metric: str  # e.g. map@10, or the drifting distribution (scores, popularity)
    value: float
    reference: float  # the trailing mean (metric_drop) or 0 (psi)
    threshold: float  # the value below (metric_drop) or above (psi) which it fires
    message: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _series(bundle: str, experiment: str, arm: str) -> str:
    return bundle + (f" [{experiment}/{arm}]" if experiment else (f" [{arm}]" if arm else ""))


def metric_drop_alerts(daily: pd.DataFrame, rules: AlertRules, days: Sequence[int]) -> list[Alert]:
    """``daily``: the all-users rows with ``day, bundle, experiment, arm, judged, outcome_complete`` and the rule's
    metric column."""
    metric = rules.metric
    if daily.empty or metric not in daily.columns:
        return []
    alerts = []
    for key, series in daily.groupby(list(SERIES_KEYS), sort=True):
        values = series.set_index("day")
        for day in days:
            if day not in values.index:
                continue
            row = values.loc[day]
            value = float(row[metric])
            if not bool(row["outcome_complete"]) or int(row["judged"]) < rules.min_eligible or math.isnan(value):
                continue
            ref = [
                float(values.loc[d, metric])
                for d in range(day - rules.reference_days, day)
                if d in values.index
                and int(values.loc[d, "judged"]) > 0
                and not math.isnan(float(values.loc[d, metric]))
            ]
            if len(ref) < rules.min_reference_days:
                continue
            mean = sum(ref) / len(ref)
            threshold = (1 - rules.max_drop) * mean
            if value < threshold:
                drop = 1 - value / mean if mean else math.inf
                alerts.append(
                    Alert(
                        day, "metric_drop", *key, metric, value, mean, threshold,
                        f"{metric} of {_series(*key)} fell to {value:.4f}, {drop:.0%} below its {len(ref)}-day trailing "
                        f"mean {mean:.4f} (alert below {threshold:.4f}: more than {rules.max_drop:.0%} down)",
                    )
                )  # fmt: skip
    return alerts


def drift_alerts(drift: pd.DataFrame, rules: AlertRules, days: Sequence[int]) -> list[Alert]:
    """``drift``: recstack.monitoring.drift.drift_table rows (several distributions)."""
    alerts = []
    if drift.empty:
        return alerts
    wanted = drift[drift["day"].isin(list(days))]
    for row in wanted.itertuples(index=False):
        value = float(row.psi)
        if math.isnan(value) or row.impressions < rules.min_impressions or row.ref_impressions < rules.min_impressions:
            continue
        if value > rules.psi_threshold:
            key = (str(row.bundle), str(row.experiment), str(row.arm))
            alerts.append(
                Alert(
                    int(row.day), "psi", *key, str(row.distribution), value, 0.0, rules.psi_threshold,
                    f"served {row.distribution} of {_series(*key)} drifted: PSI {value:.3f} > {rules.psi_threshold} "
                    f"against the previous {int(row.ref_days)} day(s)",
                )
            )  # fmt: skip
    return alerts
