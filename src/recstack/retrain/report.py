"""The retrain report (``<out>/report.html``, one self-contained file, styled like the evaluation report): every run
of the registry, oldest first, with the hold-out figures of the candidate and of the bundle it was judged against, the
gate's decision, the data window and the wall time of each step."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from recstack.evaluation.report import _CSS
from recstack.evaluation.report_plots import _STYLE, _svg
from recstack.retrain.registry import metric_key

# Offline metrics plotted across runs besides the gate's (at K=10, when the runs logged them).
CURVE_METRICS: tuple[str, ...] = ("ndcg@10", "recall@10", "map@10", "coverage@10")
STEP_ORDER: tuple[str, ...] = (
    "registry",
    "prepare",
    "serving",
    "holdout",
    "train",
    "train_ranker",
    "evaluate",
    "gate",
    "refit",
    "refit_ranker",
    "export",
    "register",
    "reload",
)
_DECISION_COLOURS = {"deployed": "tab:green", "refused": "tab:red", "not_fresh": "tab:orange"}


def _column(runs: pd.DataFrame, name: str) -> np.ndarray:
    return runs[name].to_numpy(float) if name in runs.columns else np.full(len(runs), np.nan)


def _gate_svg(runs: pd.DataFrame, metric: str) -> str:
    x = np.arange(len(runs))
    key = metric_key(metric)
    mine, theirs = _column(runs, f"holdout/candidate/{key}"), _column(runs, f"holdout/serving/{key}")
    decisions = runs.get("tag:decision", pd.Series(["?"] * len(runs))).fillna("?").tolist()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 3.0))
        ax.plot(x, theirs, marker="s", ms=4, lw=1.2, color="grey", label="serving bundle")
        ax.plot(x, mine, lw=1.2, color="tab:blue", label="candidate")
        for d in sorted(set(decisions)):
            sel = np.array([v == d for v in decisions])
            ax.scatter(
                x[sel], mine[sel], s=28, zorder=3, color=_DECISION_COLOURS.get(d, "black"), label=f"candidate: {d}"
            )
        ax.set_xticks(x, [str(i + 1) for i in x])
        ax.set_xlabel("run")
        ax.set_ylabel(f"hold-out {metric}")
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(fig)


def _metrics_svg(runs: pd.DataFrame, metrics: Sequence[str]) -> str:
    x = np.arange(len(runs))
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.1 * len(metrics), 2.7), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            ax.plot(x, _column(runs, f"holdout/candidate/{metric_key(metric)}"), marker="o", ms=3, label="candidate")
            ax.plot(x, _column(runs, f"holdout/serving/{metric_key(metric)}"), marker="s", ms=3, color="grey",
                    label="serving")  # fmt: skip
            ax.set_title(f"hold-out {metric}")
            ax.set_xticks(x, [str(i + 1) for i in x])
            ax.set_xlabel("run")
        axes[0][0].legend(frameon=False, fontsize=8)
        fig.tight_layout()
        return _svg(fig)


def _steps_svg(runs: pd.DataFrame) -> str:
    x = np.arange(len(runs))
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 3.0))
        bottom = np.zeros(len(runs))
        for i, step in enumerate(STEP_ORDER):
            seconds = np.nan_to_num(_column(runs, f"time/{step}"))
            if seconds.any():
                ax.bar(x, seconds, bottom=bottom, color=plt.get_cmap("tab10")(i % 10), label=step)
                bottom += seconds
        ax.set_xticks(x, [str(i + 1) for i in x])
        ax.set_xlabel("run")
        ax.set_ylabel("wall time (s)")
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(fig)


def _first(run: pd.Series, *keys: str) -> str | None:
    """The first of ``keys`` the run has a value for (a missing tag is NaN in the history's frame)."""
    for key in keys:
        value = run.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(runs: pd.DataFrame, metric: str) -> str:
    key = metric_key(metric)
    head = ["run", "started (UTC)", "decision", "exit", "window (test stage)", f"candidate {metric}",
            f"serving {metric}", "delta", "hold-out users", "wall s", "bundle"]  # fmt: skip
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for i, (_, run) in enumerate(runs.iterrows()):
        seconds = float(np.nansum([float(run.get(f"time/{s}", np.nan)) for s in STEP_ORDER]))
        ends = [_first(run, f"param:window/test/{end}") for end in ("first", "last")]
        window = " – ".join(e[:10] for e in ends if e)
        decision = _first(run, "tag:decision") or ""
        cls = " class='best'" if decision == "deployed" else ""
        cells = [
            f"{i + 1}: {_fmt(run.get('name'))}",
            _fmt(run["start"].strftime("%Y-%m-%d %H:%M:%S")),
            _fmt(decision),
            _fmt(run.get("tag:exit_code")),
            _fmt(window),
            _fmt(run.get(f"holdout/candidate/{key}")),
            _fmt(run.get(f"holdout/serving/{key}")),
            _fmt(run.get("gate/delta")),
            _fmt(int(run["holdout/users"]) if not pd.isna(run.get("holdout/users", np.nan)) else None),
            f"{seconds:.1f}",
            _fmt(_first(run, "tag:model_tag", "tag:bundle")),
        ]
        rows.append("<tr>" + "".join(f"<td{cls}>{c}</td>" for c in cells) + "</tr>")
    return "<div class='scroll'><table>" + "".join(rows) + "</table></div>"


def write_report(
    runs: pd.DataFrame, path: str | Path, *, title: str = "recstack-retrain", gate_metric: str = "ndcg@10"
) -> Path:
    """Write the report of ``runs`` (:meth:`recstack.retrain.registry.RunRegistry.history`) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    heading = f"recstack retraining: {title}"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(heading)}</h1>",
        f"<p class='meta'>{len(runs)} run(s). Each candidate and the bundle serving at the time are judged on the same "
        "hold-out (the window's test stage, without what the serving bundle had seen), through the served pipeline, "
        f"by id; the gate compares {html.escape(gate_metric)}. Generated "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}.</p>",
    ]
    if len(runs):
        deployed = (
            runs[runs.get("tag:decision", pd.Series(dtype=str)) == "deployed"]
            if "tag:decision" in runs
            else runs.iloc[:0]
        )
        last = deployed.iloc[-1] if len(deployed) else None
        verdict = (
            f"Serving now (last deployed): run {_fmt(last['name'])}, {_fmt(_first(last, 'tag:model_tag', 'tag:bundle'))}."
            if last is not None
            else "No run has deployed a bundle yet."
        )
        curves = [m for m in CURVE_METRICS if f"holdout/candidate/{metric_key(m)}" in runs.columns]
        parts += [
            f"<p class='verdict'>{verdict}</p>",
            "<h2>Runs</h2>",
            "<p class='note'>Deployed runs in green. delta = candidate - serving; exit 99: the gate refused, 10: the "
            "serving bundle had seen the whole hold-out.</p>",
            _table(runs, gate_metric),
            f"<h2>The gate: hold-out {html.escape(gate_metric)}</h2>",
            f"<div class='fig'>{_gate_svg(runs, gate_metric)}</div>",
        ]
        if curves:
            parts += ["<h2>Offline metrics across runs</h2>", f"<div class='fig'>{_metrics_svg(runs, curves)}</div>"]
        parts += ["<h2>Wall time per step</h2>", f"<div class='fig'>{_steps_svg(runs)}</div>"]
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
