"""The report's figures, drawn with matplotlib (Agg) and returned as inline SVG text, so the HTML needs no other file."""

from __future__ import annotations

import io
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

_STYLE = {
    "svg.fonttype": "none",  # text stays text: smaller files, selectable labels
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def _svg(fig: plt.Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: the SVG is inlined in HTML


def _colours(n: int) -> list:
    return [plt.get_cmap("tab10")(i % 10) for i in range(n)]


def metric_curves_svg(curves: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """One panel per metric, metric@K against K = 1..max, one line per run. ``curves[run][metric] -> values``."""
    runs = list(curves)
    metrics = list(next(iter(curves.values())))
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.1 * len(metrics), 2.8), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            for run, colour in zip(runs, _colours(len(runs))):
                values = curves[run][metric]
                ax.plot(np.arange(1, len(values) + 1), values, label=run, color=colour, lw=1.6)
            ax.set_title(f"{metric}@K")
            ax.set_xlabel("K")
        axes[0][0].legend(frameon=False, fontsize=8)
        fig.tight_layout()
        return _svg(fig)


def segment_bars_svg(table: pd.DataFrame, metric: str, title: str) -> str:
    """Grouped bars: ``table`` has one row per segment label and one column per run (values of ``metric``)."""
    runs = list(table.columns)
    labels = [str(i) for i in table.index]
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(labels))
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(min(10.5, max(4.5, 0.22 * len(labels) * len(runs) + 2.5)), 2.8))
        for j, (run, colour) in enumerate(zip(runs, _colours(len(runs)))):
            ax.bar(
                x + (j - (len(runs) - 1) / 2) * width, table[run].to_numpy(dtype=float), width, label=run, color=colour
            )
        ax.set_xticks(x, labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
        ax.set_ylabel(metric)
        ax.set_title(title)
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        return _svg(fig)


def popularity_bias_svg(
    history: np.ndarray,
    recommended: Mapping[str, np.ndarray],
    tail_share: Mapping[str, float],
    k: int,
    n_bins: int = 10,
) -> str:
    """Left: mean popularity of each user's top-``k`` against the mean popularity of their training items (users
    binned by the latter into deciles), with the diagonal for "recommends as popular as what the user consumes".
    Right: the long-tail share of each run's recommendations."""
    runs = list(recommended)
    edges = np.unique(np.quantile(history, np.linspace(0, 1, n_bins + 1)))
    bins = np.clip(np.searchsorted(edges, history, side="right") - 1, 0, max(len(edges) - 2, 0))
    centres = np.array([history[bins == b].mean() for b in range(len(edges) - 1) if (bins == b).any()])
    with plt.rc_context(_STYLE):
        fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.0), gridspec_kw={"width_ratios": [1.6, 1]})
        for run, colour in zip(runs, _colours(len(runs))):
            means = [recommended[run][bins == b].mean() for b in range(len(edges) - 1) if (bins == b).any()]
            left.plot(centres, means, marker="o", ms=3, lw=1.6, label=run, color=colour)
        lim = [0, max(centres.max(initial=1.0), 1.0)]
        left.plot(lim, lim, ls="--", color="grey", lw=1, label="same as history")
        left.set_xlabel("user's history: mean item popularity (train interactions)")
        left.set_ylabel(f"recommended top-{k}: mean popularity")
        left.set_title("Popularity of recommendations vs. of the user's history")
        left.legend(frameon=False, fontsize=8)
        bars = right.bar(runs, [100 * tail_share[r] for r in runs], color=_colours(len(runs)))
        right.bar_label(bars, fmt="%.1f%%", fontsize=8)
        right.set_ylabel(f"% of top-{k} outside the head")
        right.set_title("Long-tail share (head = top 20% items)")
        right.tick_params(axis="x", rotation=30 if len(runs) > 3 else 0)
        fig.tight_layout()
        return _svg(fig)
