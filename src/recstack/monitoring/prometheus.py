"""The reported day's metrics as Prometheus gauges, in the text exposition format.

The file is meant for node_exporter's textfile collector (point ``--collector.textfile.directory`` at its folder; it
is written to a temporary name and renamed, so a scrape never reads half of it), and may also be pushed to a
Pushgateway (``prometheus.pushgateway=<host:port or URL>``) as job ``recstack_monitor``. A fresh
``CollectorRegistry`` per run keeps the process's own metrics out. Every series is labelled by ``bundle``,
``experiment`` and ``arm`` (``""`` without an experiment); a value that is undefined (no judged impression, no
catalogue size, no reference for a PSI) is left out rather than written as NaN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from recstack.monitoring.alerts import Alert

LABELS = ("bundle", "experiment", "arm")
JOB = "recstack_monitor"


def _finite(value: object) -> bool:
    try:
        return not math.isnan(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def build_registry(
    day_rows: pd.DataFrame,
    drift_rows: pd.DataFrame,
    alerts: Iterable[Alert],
    *,
    ks: Iterable[int],
    day_start_s: float,
    day_impressions: int = 0,
) -> CollectorRegistry:
    """Gauges for the all-users rows of one day (``day_rows``), its PSIs and its alerts."""
    registry = CollectorRegistry()
    ks = tuple(ks)

    def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"recstack_online_{name}", doc, [*LABELS, *extra], registry=registry)

    plain = {
        "impressions": gauge("impressions", "recommendation lists served on the reported day"),
        "users": gauge("users", "distinct users served on the reported day"),
        "judged": gauge("judged_impressions", "impressions followed by an interaction (those MAP/NDCG judge)"),
        "conversion_rate": gauge("conversion_rate", "share of impressions with an attributed conversion"),
        "distinct_items": gauge("distinct_items", "distinct items served"),
        "coverage": gauge("coverage", "distinct items served / catalogue size"),
        "mean_popularity": gauge("mean_popularity", "mean popularity (outcome events) of the served items"),
    }
    at_k = {
        "ctr": gauge("ctr", "share of impressions with an attributed click within the top k", ("k",)),
        "item_ctr": gauge("item_ctr", "attributed clicks within the top k / items shown within the top k", ("k",)),
        "map": gauge("map", "online MAP@k over judged impressions (offline evaluator's definition)", ("k",)),
        "ndcg": gauge("ndcg", "online NDCG@k over judged impressions (offline evaluator's definition)", ("k",)),
    }
    for row in day_rows.to_dict("records"):
        labels = [str(row[name]) for name in LABELS]
        for column, g in plain.items():
            if column in row and _finite(row[column]):
                g.labels(*labels).set(float(row[column]))
        for name, g in at_k.items():
            for k in ks:
                value = row.get(f"{name}@{k}")
                if _finite(value):
                    g.labels(*labels, str(k)).set(float(value))  # type: ignore[arg-type]
    psi = gauge(
        "psi", "population stability index of the served distribution against the trailing days", ("distribution",)
    )
    for row in drift_rows.to_dict("records"):
        if _finite(row["psi"]):
            psi.labels(*(str(row[name]) for name in LABELS), str(row["distribution"])).set(float(row["psi"]))
    firing = Gauge("recstack_monitor_alerts", "alerts firing on the reported day", ["kind"], registry=registry)
    counts = {"metric_drop": 0, "psi": 0}
    for alert in alerts:
        counts[alert.kind] = counts.get(alert.kind, 0) + 1
    for kind, n in counts.items():
        firing.labels(kind).set(n)
    Gauge(
        "recstack_monitor_day_impressions",
        "impressions on the reported day, all series (0: no traffic)",
        registry=registry,
    ).set(day_impressions)
    Gauge("recstack_monitor_day_timestamp_seconds", "start (UTC) of the reported day", registry=registry).set(
        day_start_s
    )
    Gauge("recstack_monitor_last_run_timestamp_seconds", "when this file was written", registry=registry).set(
        time.time()
    )
    return registry


def write(registry: CollectorRegistry, path: str | Path, pushgateway: str | None = None) -> None:
    """Write the textfile (atomically) and push to ``pushgateway`` when one is given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    if pushgateway:
        push_to_gateway(pushgateway, job=JOB, registry=registry)
