"""The monitoring report: one self-contained ``report.html`` in the evaluation report's style (its CSS, its matplotlib
style and inline SVG figures), so online and offline figures read alike.

Top to bottom: the alerts of the reported day as lines (or one line saying there is none), notes, the day's metrics
per bundle and arm, time series of the window per bundle and arm, the A/B comparisons with their intervals and
verdicts, the drift table, the per-segment table (with a membership table), and the definitions.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from recstack.evaluation.report_plots import _STYLE, _colours, _svg
from recstack.monitoring.alerts import ALERT_EXIT_CODE
from recstack.monitoring.online_metrics import ALL_USERS
from recstack.monitoring.significance import AB_SHOWN_COLUMNS
from recstack.monitoring.spec import MetricSpec

if TYPE_CHECKING:
    from recstack.monitoring.job import MonitorRun

_EXTRA_CSS = """
.alert{background:#fbeaea;border-left:4px solid #c0392b;padding:6px 12px;margin:4px 0}
.ok{background:#f3f7ee;border-left:4px solid #6a9f3a;padding:6px 12px}
.yes{color:#1e7b34;font-weight:700}.no{color:#666}
"""
_COUNTS = ("impressions", "users", "judged", "conversions", "distinct_items", "users_judged", "control_n", "arm_n")


def _series_label(bundle: str, experiment: str, arm: str) -> str:
    return f"{bundle} [{experiment}/{arm}]" if experiment else (f"{bundle} [{arm}]" if arm else str(bundle))


def _fmt(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "<span class='yes'>yes</span>" if value else "<span class='no'>no</span>"
    if (
        isinstance(value, int | np.integer)
        or column in _COUNTS
        or column.split("@")[0] in ("clicked", "clicks", "shown")
    ):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if column in ("mean_popularity",):
            return f"{value:,.1f}"
        if column == "p_value":
            return "<1e-16" if value < 1e-16 else f"{value:.2g}"
        return f"{value:.4f}"
    return html.escape(str(value))


def _table(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    columns = [c for c in (columns or frame.columns) if c in frame.columns]
    if frame.empty:
        return "<p class='note'>(none)</p>"
    head = "".join(
        f"<th class='name'>{html.escape(c)}</th>" if i == 0 else f"<th>{html.escape(c)}</th>"
        for i, c in enumerate(columns)
    )
    rows = []
    for row in frame[columns].itertuples(index=False):
        cells = "".join(
            f"<td class='name'>{_fmt(c, v)}</td>" if i == 0 else f"<td>{_fmt(c, v)}</td>"
            for i, (c, v) in enumerate(zip(columns, row))
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(rows)}</table></div>"


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(
        0, "series", [_series_label(*r) for r in frame[["bundle", "experiment", "arm"]].itertuples(index=False)]
    )
    return frame


def time_series_svg(daily: pd.DataFrame, drift: pd.DataFrame, panels: Sequence[tuple[str, str]]) -> str:
    """Small multiples over the window: one panel per ``(column, title)``, one line per bundle/experiment/arm.
    ``psi:<distribution>`` columns read the drift table."""
    series = sorted({tuple(r) for r in daily[["bundle", "experiment", "arm"]].itertuples(index=False)})
    days = sorted(daily["day"].unique())
    x = [pd.Timestamp(d) for d in days]
    cols = 3
    rows = -(-len(panels) // cols)
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(10.5, 2.5 * rows), squeeze=False, sharex=True)
        for ax, (column, title) in zip(axes.ravel(), panels):
            for key, colour in zip(series, _colours(len(series))):
                if column.startswith("psi:"):
                    part = drift[
                        (drift["distribution"] == column[4:])
                        & (drift["bundle"] == key[0])
                        & (drift["experiment"] == key[1])
                        & (drift["arm"] == key[2])
                    ].set_index("day")["psi"]
                else:
                    part = (
                        daily[
                            (daily["bundle"] == key[0]) & (daily["experiment"] == key[1]) & (daily["arm"] == key[2])
                        ].set_index("day")[column]
                        if column in daily
                        else pd.Series(dtype=float)
                    )
                values = [float(part.get(d, np.nan)) for d in days]
                ax.plot(x, values, marker="o", ms=2.5, lw=1.4, color=colour, label=_series_label(*key))
                if column.split("@")[0] in ("map", "ndcg") and "outcome_complete" in daily:
                    complete = daily.groupby("day")["outcome_complete"].all()
                    open_days = [i for i, d in enumerate(days) if not bool(complete.get(d, True))]
                    ax.scatter(
                        [x[i] for i in open_days], [values[i] for i in open_days], s=22, facecolors="white",
                        edgecolors=colour, zorder=3,
                    )  # fmt: skip
            ax.set_title(title)
            ax.tick_params(axis="x", rotation=30, labelsize=7)
        for ax in axes.ravel()[len(panels) :]:
            ax.set_visible(False)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0, 1, 0.96 if rows > 1 else 0.88))
        fig.legend(handles, labels, loc="upper center", ncol=min(4, max(1, len(labels))), frameon=False, fontsize=8)
        return _svg(fig)


def write_report(run: MonitorRun, path: Path, spec: MetricSpec) -> Path:
    """Write ``report.html`` for a finished run; returns its path."""
    from recstack.evaluation.page_style import PAGE_CSS as _CSS  # the reports' shared page style (torch-free)

    day = run.day.isoformat()
    settings = run.settings
    ab_settings = settings["ab"]
    rules = settings["alerts"]
    k_main = int(ab_settings["metric"].split("@")[1])
    everyone = run.daily[run.daily["segment"] == ALL_USERS]
    metric_columns = [
        "impressions",
        "users",
        *(f"ctr@{k}" for k in spec.ks),
        *(f"item_ctr@{k}" for k in spec.ks),
        "conversion_rate",
        "judged",
        *(f"{m}@{k}" for k in spec.ks for m in ("map", "ndcg")),
        "distinct_items",
        "coverage",
        "mean_popularity",
        "outcome_complete",
    ]
    panels = [
        ("impressions", "impressions"),
        (f"ctr@{ab_settings['ctr_k']}", f"CTR@{ab_settings['ctr_k']}"),
        ("conversion_rate", "conversion rate"),
        (f"map@{k_main}", f"online MAP@{k_main} (open: provisional)"),
        (f"ndcg@{k_main}", f"online NDCG@{k_main} (open: provisional)"),
        (
            "coverage" if spec.catalogue_size else "distinct_items",
            "coverage" if spec.catalogue_size else "distinct items",
        ),
        ("mean_popularity", "mean popularity served"),
        ("psi:scores", "PSI served scores"),
        ("psi:popularity", "PSI served popularity"),
    ]
    figure = time_series_svg(everyone, run.drift, panels) if not everyone.empty else ""
    alerts = (
        "".join(f"<p class='alert'>ALERT ({html.escape(a.kind)}): {html.escape(a.message)}</p>" for a in run.alerts)
        if run.alerts
        else f"<p class='ok'>No alert on {day}.</p>"
    )
    earlier = "".join(f"<li>{html.escape(str(_day(a.day)))}: {html.escape(a.message)}</li>" for a in run.earlier_alerts)
    segments = run.daily[(run.daily["day"] == day) & (run.daily["segment"] != ALL_USERS)]
    seg_columns = ["segment", "series", "impressions", "users", f"ctr@{ab_settings['ctr_k']}", "conversion_rate",
                   "judged", f"map@{k_main}", f"ndcg@{k_main}"]  # fmt: skip
    minutes = spec.attribution_window_ms / 60_000
    hours = spec.outcome_window_ms / 3_600_000
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>recstack monitoring: {day}</title><style>{_CSS}{_EXTRA_CSS}</style></head><body>",
        f"<h1>recstack monitoring: {day}</h1>",
        f"<p class='meta'>Window {run.first_day.isoformat()} … {day} (UTC days) over the lake "
        f"{html.escape(str(settings['lake']))}: {run.loaded.impressions:,} impressions and {run.loaded.events:,} "
        f"events loaded (with {rules['reference_days']} reference days before the window). "
        f"Generated by recstack-monitor; exit status {ALERT_EXIT_CODE} when an alert fires on the reported day.</p>",
        "<h2 id='alerts'>Alerts</h2>",
        alerts,
        *(f"<p class='note'>{html.escape(n)}</p>" for n in run.notes),
        f"<h2 id='day'>{day}: per bundle and arm</h2>",
        _table(_labelled(run.day_rows), ["series", *metric_columns]),
        f"<h2 id='series'>Over the window</h2><div class='fig'>{figure}</div>",
        "<h2 id='ab'>A/B experiments</h2>",
        f"<p class='note'>Pooled over the window. {html.escape(ab_settings['metric'])}: impression-weighted mean, "
        f"{100 * (1 - ab_settings['alpha']):.0f}% percentile interval from {ab_settings['samples']} bootstrap resamples "
        "of users (seeded). CTR: two-proportion z-test on impressions with a click (it treats impressions as "
        "independent, so with many impressions per user its p-value is optimistic).</p>",
        _table(run.arms),
        _table(run.ab, list(AB_SHOWN_COLUMNS)),
        "<h2 id='drift'>Drift (population stability index)</h2>",
        f"<p class='note'>{day} against the previous {rules['reference_days']} days of the same series, "
        f"{rules['psi_bins']} bins at the reference's quantiles; alert above {rules['psi_threshold']}.</p>",
        _table(run.drift[run.drift["day"] == day]),
    ]
    if not segments.empty:
        parts += [f"<h2 id='segments'>{day}: per segment</h2>", _table(_labelled(segments), seg_columns)]
    if earlier:
        parts += ["<h2 id='earlier'>Earlier days of the window</h2>", f"<ul class='note'>{earlier}</ul>"]
    parts += [
        "<h2 id='definitions'>Definitions</h2>",
        "<ul class='note'>"
        f"<li>Attribution: a click or conversion carrying a request_id belongs to that list (same user, not before "
        f"it); otherwise to the latest list that showed the item to the user within {minutes:g} min before. An event "
        "earlier than the list is never attributed.</li>"
        "<li>CTR@k: impressions with an attributed click within the top k / impressions; item CTR@k: clicks within "
        "the top k / items shown there. Conversion: impressions with an attributed "
        f"{', '.join(spec.conversion_events)}.</li>"
        f"<li>Online MAP@K / NDCG@K: each list against the distinct items its user interacted with "
        f"({', '.join(spec.outcome_events)}) within {hours:g} h after it, with the offline evaluator's definitions "
        "(AP@K divides by min(K, |relevant|)). Impressions followed by no interaction are not judged (excluded from "
        "MAP/NDCG, counted in CTR); 'judged' counts the others.</li>"
        "<li>Coverage: distinct items served / catalogue size; mean popularity: of the served slots, an item's "
        "popularity being its outcome events in the loaded window.</li></ul>",
        "</body></html>",
    ]
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text("\n".join(parts))
    temp.replace(path)
    return path


def _day(number: int) -> str:
    from recstack.monitoring.lake_tables import day_of

    return day_of(number).isoformat()
