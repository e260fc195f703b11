"""``recstack-monitor [key=value ...]`` over ``configs/monitor.yaml``: online metrics over the lake's impressions.

Measures the ``days`` days ending on ``day`` (recstack.monitoring.job), writes ``daily.parquet``, ``drift.parquet``,
``summary.json``, ``report.html`` and ``metrics.prom`` under ``out``, and prints a short summary table.
``engine=spark`` joins the impressions to the events on PySpark from the same SQL (recstack.monitoring.monitor_spark;
``configs/engine/``, as for ``recstack-segments run``); it needs Java 17+, and says so in one line when there is none.

Exit status: 0 when the reported day is fine, 3 (:data:`~recstack.monitoring.alerts.ALERT_EXIT_CODE`) when an alert
fires on it (a scheduler sees a failed run; the outputs are written all the same), 2 on bad input or a missing or
empty lake (one line ``recstack-monitor: error: ...``).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recstack.config import compose, engine_node
from recstack.data.engines import EngineError, engine_from_config

USAGE = (
    "usage: recstack-monitor [lake=<dir>] [out=<dir>] [day=YYYY-MM-DD] [days=14] [segment_set=<path>] [key=value ...]\n"
    "                        [engine=duckdb|spark]\n"
    "  settings and their defaults: configs/monitor.yaml; exit 3 when an alert fires on the reported day"
)
PROG = "recstack-monitor"


def _list(node: Any, name: str) -> tuple:
    if isinstance(node, ListConfig | list | tuple):
        return tuple(node)
    raise ValueError(f"{name}={node!r}: give a list, e.g. {name}=[click]")


def specs(cfg: DictConfig):
    """The typed settings of a composed config (every value checked before any work)."""
    from recstack.monitoring.spec import ABSpec, AlertRules, MetricSpec, MonitorError

    m = cfg.metrics
    for name in ("attribution_window_min", "outcome_window_h"):
        value = m[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise MonitorError(f"metrics.{name}={value!r}: give a positive number")
    metric = MetricSpec(
        ks=tuple(_list(m.ks, "metrics.ks")),
        attribution_window_ms=round(float(m.attribution_window_min) * 60_000),
        click_events=tuple(_list(m.click_events, "metrics.click_events")),
        conversion_events=tuple(_list(m.conversion_events, "metrics.conversion_events")),
        outcome_events=tuple(_list(m.outcome_events, "metrics.outcome_events")),
        outcome_window_ms=round(float(m.outcome_window_h) * 3_600_000),
        catalogue_size=catalogue_size(cfg),
    )
    try:
        rules = AlertRules(**OmegaConf.to_container(cfg.alerts, resolve=True))  # type: ignore[arg-type]
        ab = ABSpec(**OmegaConf.to_container(cfg.ab, resolve=True))  # type: ignore[arg-type]
    except TypeError as exc:  # an unknown key
        raise MonitorError(f"alerts / ab: {exc}; the keys are in configs/monitor.yaml") from None
    return metric, rules, ab


def catalogue_size(cfg: DictConfig) -> int | None:
    """``catalogue_size``, else the distinct ``item_id`` of ``items_path`` (CSV or Parquet), else None."""
    if cfg.catalogue_size is not None:
        return cfg.catalogue_size
    if not cfg.items_path:
        return None
    import duckdb

    path = Path(str(cfg.items_path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"items_path={path} does not exist; give the item file, or catalogue_size=<n>")
    reader = "read_parquet" if path.suffix.lower() == ".parquet" else "read_csv_auto"
    with duckdb.connect() as con:
        quoted = str(path).replace("'", "''")
        return int(con.execute(f"SELECT count(DISTINCT item_id) FROM {reader}('{quoted}')").fetchall()[0][0])


def membership(cfg: DictConfig):
    if not cfg.segment_set:
        return None, None
    from recstack.evaluation.breakdown import read_segment_set  # the one reader of membership tables

    segment_set = read_segment_set(str(cfg.segment_set))
    return segment_set.membership, segment_set.source


def run(args: Sequence[str]):
    from recstack.monitoring.job import run_monitor
    from recstack.monitoring.lake_tables import parse_day

    cfg = compose("monitor", list(args))
    metric, rules, ab = specs(cfg)
    members, source = membership(cfg)
    engine = engine_from_config(engine_node(cfg))
    try:
        return run_monitor(
            str(cfg.lake),
            str(cfg.out),
            day=parse_day(cfg.day),
            days=cfg.days,
            spec=metric,
            rules=rules,
            ab=ab,
            membership=members,
            segments_source=source,
            threads=cfg.threads,
            memory_limit=cfg.memory_limit,
            drop_bots=bool(cfg.drop_bots),
            pushgateway=cfg.prometheus.pushgateway,
            prometheus_file=cfg.prometheus.file,
            report=bool(cfg.report),
            engine=engine,
        )
    finally:
        if engine is not None:
            engine.close()


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def summary_lines(run) -> list[str]:
    from recstack.monitoring.report import _series_label

    ab = run.settings["ab"]
    k = ab["ctr_k"]
    metric = ab["metric"]
    day = run.day.isoformat()
    loaded = run.loaded
    lines = [
        f"{PROG} {day} (window {run.first_day.isoformat()} .. {day}): {loaded.impressions:,} impressions and "
        f"{loaded.events:,} events loaded in {sum(run.seconds.values()):.1f} s"
    ]
    rows = run.day_rows
    if not run.traffic.get(day):
        lines.append(f"  {day}: zero traffic (no impressions)")
    if not rows.empty:
        drift = run.drift[run.drift["day"] == day]
        header = (
            f"  {'series':34s} {'impressions':>11s} {'users':>8s} {'ctr@' + str(k):>8s} {'conv':>7s} {'judged':>9s} "
            f"{metric:>8s} {'ndcg@' + metric.split('@')[1]:>8s} {'items':>7s} {'psi sc':>7s} {'psi pop':>7s}"
        )
        lines.append(header)
        for row in rows.to_dict("records"):
            key = (row["bundle"], row["experiment"], row["arm"])
            psi = {
                d: drift[
                    (drift["bundle"] == key[0])
                    & (drift["experiment"] == key[1])
                    & (drift["arm"] == key[2])
                    & (drift["distribution"] == d)
                ]["psi"]
                for d in ("scores", "popularity")
            }
            psi_text = {d: _num(float(v.iloc[0]), 3) if len(v) else "–" for d, v in psi.items()}
            items = row.get("distinct_items")
            lines.append(
                f"  {_series_label(*key)[:34]:34s} {int(row['impressions']):>11,} {int(row['users']):>8,} "
                f"{_num(row.get(f'ctr@{k}')):>8s} {_num(row.get('conversion_rate')):>7s} {int(row.get('judged', 0)):>9,} "
                f"{_num(row.get(metric)):>8s} {_num(row.get('ndcg@' + metric.split('@')[1])):>8s} "
                f"{'–' if items is None or items != items else f'{int(items):,}':>7s} {psi_text['scores']:>7s} "
                f"{psi_text['popularity']:>7s}"
            )
    for row in run.ab.to_dict("records"):
        verdict = "significant" if row["significant"] else "not significant"
        lines.append(
            f"  A/B {row['experiment']}: {row['arm']} vs {row['control']} on {row['metric']}: "
            f"{_num(row['arm_value'])} vs {_num(row['control_value'])}, diff {_num(row['diff'])} "
            f"[{_num(row['ci_low'])}, {_num(row['ci_high'])}] ({verdict} at alpha {ab['alpha']})"
        )
    for note in run.notes:
        lines.append(f"  note: {note}")
    if run.alerts:
        lines += [f"  ALERT ({a.kind}): {a.message}" for a in run.alerts]
    else:
        lines.append("  alerts: none")
    lines.append(f"  written: {', '.join(run.paths.values())}")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    import duckdb

    from recstack.data.lake import LakeError
    from recstack.data.schema import DataError
    from recstack.monitoring.alerts import ALERT_EXIT_CODE

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = run(args)
    except (
        LakeError,
        DataError,
        EngineError,
        ValueError,
        TypeError,
        KeyError,
        OSError,
        duckdb.Error,
        HydraException,
        OmegaConfBaseException,
    ) as exc:
        text = " ".join((str(exc).strip() or type(exc).__name__).split())
        print(f"{PROG}: error: {text}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(summary_lines(result)))
    sys.exit(ALERT_EXIT_CODE if result.alerts else 0)


if __name__ == "__main__":
    main()
