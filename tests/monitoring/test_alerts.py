"""The alert rules on hand-made daily and drift tables: firing, not firing, and the guards."""

from __future__ import annotations

import pandas as pd

from recstack.monitoring.alerts import drift_alerts, metric_drop_alerts
from recstack.monitoring.spec import AlertRules

RULES = AlertRules(min_eligible=10, min_impressions=10)


def daily(values: list[float], judged: int = 50, complete: bool = True) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": range(len(values)),
            "bundle": "mf@1",
            "experiment": "",
            "arm": "",
            "judged": judged,
            "outcome_complete": complete,
            "map@10": values,
        }
    )


def test_map_drop_fires_below_the_trailing_mean() -> None:
    table = daily([0.30, 0.32, 0.28, 0.30, 0.30, 0.30, 0.30, 0.23])  # trailing mean 0.30; 0.23 is 23% below
    alerts = metric_drop_alerts(table, RULES, [7])
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.kind, alert.day, alert.metric) == ("metric_drop", 7, "map@10")
    assert alert.reference == 0.30 and abs(alert.threshold - 0.24) < 1e-12
    assert "23% below" in alert.message and "mf@1" in alert.message


def test_map_drop_does_not_fire_within_the_tolerance() -> None:
    assert metric_drop_alerts(daily([0.30] * 7 + [0.25]), RULES, [7]) == []  # 17% below
    assert metric_drop_alerts(daily([0.30] * 7 + [0.35]), RULES, [7]) == []  # up


def test_the_trailing_window_is_seven_days() -> None:
    # a bad day 8 days back is outside the reference of day 8
    table = daily([0.05, 0.30, 0.30, 0.30, 0.30, 0.30, 0.30, 0.30, 0.25])
    assert metric_drop_alerts(table, RULES, [8]) == []


def test_guards_small_days_incomplete_days_and_missing_history() -> None:
    values = [0.30] * 7 + [0.10]
    assert metric_drop_alerts(daily(values, judged=5), RULES, [7]) == []  # too few judged impressions
    assert metric_drop_alerts(daily(values, complete=False), RULES, [7]) == []  # outcomes still arriving
    assert metric_drop_alerts(daily([0.10]), RULES, [0]) == []  # no earlier day
    strict = AlertRules(min_eligible=10, min_reference_days=3)
    assert metric_drop_alerts(daily([0.30, 0.30, 0.10]), strict, [2]) == []
    assert len(metric_drop_alerts(daily([0.30, 0.30, 0.30, 0.10]), strict, [3])) == 1


def test_psi_alert_fires_above_the_threshold_only_with_enough_traffic() -> None:
    drift = pd.DataFrame(
        {
            "day": [5, 5, 5],
            "bundle": "mf@1",
            "experiment": "exp",
            "arm": ["a", "b", "c"],
            "distribution": ["scores", "popularity", "scores"],
            "psi": [0.35, 0.15, 0.9],
            "impressions": [500, 500, 5],
            "ref_impressions": [3000, 3000, 3000],
            "ref_days": 7,
        }
    )
    alerts = drift_alerts(drift, RULES, [5])
    assert [(a.kind, a.arm, a.metric) for a in alerts] == [("psi", "a", "scores")]
    assert "PSI 0.350 > 0.2" in alerts[0].message
    assert drift_alerts(drift, RULES, [4]) == []
