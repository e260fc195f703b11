"""The comparison report: ``report.html`` (one self-contained file), ``report.md`` and ``metrics.json``.

A reader should see at a glance which model wins, and for whom: a comparison table with the best value of each
column highlighted, metric@K curves, the headline metric by user activity and by each demographic column, a
popularity-bias figure, and one sentence naming the winner overall and per segment. Given a segment set (a membership
table of possibly overlapping segments), a table of the headline metrics per segment and model is added.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recstack.data.prepared import PreparedSplit
from recstack.evaluation import breakdown
from recstack.evaluation.evaluator import ALL_METRIC_NAMES, EvaluationResult
from recstack.evaluation.page_style import PAGE_CSS as _CSS
from recstack.evaluation.report_plots import metric_curves_svg, popularity_bias_svg, segment_bars_svg

# Lower average popularity = less popularity bias; everything else in the table is better when higher.
LOWER_IS_BETTER = frozenset({"avg_pop"})
# Segment-set rows beside the segments: every evaluated user, and those in none of the segments.
ALL_USERS = "(all users)"
NO_SEGMENT = "(in no segment)"
# The segment-set table's metrics besides the headline, at the headline's K.
SEGMENT_SET_METRICS = ("ndcg", "recall", "map")
MAX_SEGMENT_BARS = 40  # more segments than this: the table only, a bar chart would be unreadable


@dataclass(frozen=True)
class RunEvaluation:
    """One model's evaluation for the report: a display name, its result (evaluated with ``keep_per_user=True``) and
    optional facts shown beside the metrics (e.g. ``{"train_seconds": 12.3, "epochs": 40}``)."""

    name: str
    result: EvaluationResult
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportPaths:
    out_dir: Path
    html: Path
    markdown: Path
    metrics_json: Path


@dataclass(frozen=True)
class _SegmentTable:
    name: str
    table: pd.DataFrame  # rows: labels; columns: n_users, then one per run
    winners: dict[str, str]


@dataclass(frozen=True)
class _SegmentSetTable:
    source: str
    metrics: tuple[str, ...]
    table: pd.DataFrame  # rows: ALL_USERS, segments, NO_SEGMENT; columns: n_users, members, then "<metric> <run>"
    best: dict[str, set[str]]  # column -> rows where that run is best on that metric
    match: breakdown.SegmentSetMatch


def write_report(
    runs: Sequence[RunEvaluation],
    split: PreparedSplit,
    out_dir: str | Path,
    *,
    table_ks: Sequence[int] = (10, 20),
    headline: str = "ndcg@10",
    title: str | None = None,
    segment_set: breakdown.SegmentSet | None = None,
    segment_metrics: Sequence[str] | None = None,
) -> ReportPaths:
    """Write the three report files into ``out_dir`` (created) and return their paths.

    Every run must be evaluated on ``split``'s same stage with per-user data kept, at least at ``table_ks`` and at the
    headline's K; curves run from K = 1 to the longest ranked list kept (evaluate with ``max(ks) = 50`` for K=1..50).
    With ``segment_set``, a table gives per segment the users evaluated and ``segment_metrics`` per run (default: the
    headline, then ndcg, recall and map at the headline's K).
    """
    _check_runs(runs, split, table_ks, headline)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [r.name for r in runs]
    users = runs[0].result.per_user.users  # type: ignore[union-attr]
    comparison = _comparison_table(runs, table_ks)
    segments = _segment_tables(runs, split, users, headline)
    seg_set = None
    if segment_set is not None:
        metrics = _segment_set_metrics(runs, headline, segment_metrics)
        seg_set = _segment_set_table(runs, split, users, segment_set, metrics)
    verdict = _verdict(
        comparison, [*segments, *([_set_as_segments(seg_set, names, headline)] if seg_set else [])], headline
    )
    k_pop = int(table_ks[0])
    history = breakdown.history_popularity(split, users)
    recommended = {r.name: r.result.per_user.metrics[f"avg_pop@{k_pop}"] for r in runs}  # type: ignore[union-attr]
    tail = {r.name: breakdown.long_tail_share(r.result.per_user.topk, split, k_pop) for r in runs}  # type: ignore[union-attr]
    curves = {r.name: breakdown.metric_curves(r.result.per_user) for r in runs}  # type: ignore[arg-type]
    result0 = runs[0].result
    header = {
        "title": title or f"recstack evaluation: {split.dataset} ({result0.stage})",
        "dataset": split.dataset,
        "config_hash": split.config_hash,
        "stage": result0.stage,
        "n_users": split.n_users,
        "n_items": split.n_items,
        "n_users_evaluated": result0.n_users_evaluated,
        "n_users_skipped": result0.n_users_skipped,
        "max_k": int(result0.per_user.hits.shape[1]),  # type: ignore[union-attr]
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    paths = ReportPaths(out, out / "report.html", out / "report.md", out / "metrics.json")
    figures = {
        "curves": metric_curves_svg(curves),
        "segments": {s.name: segment_bars_svg(s.table[names], headline, f"{headline} by {s.name}") for s in segments},
        "popularity": popularity_bias_svg(history, recommended, tail, k_pop),
        "segment_set": _segment_set_svg(seg_set, names, headline) if seg_set else "",
    }
    paths.html.write_text(_html(header, verdict, comparison, segments, figures, tail, headline, k_pop, seg_set))
    paths.markdown.write_text(_markdown(header, verdict, comparison, segments, tail, headline, k_pop, seg_set))
    data = _json(header, verdict, runs, segments, tail, curves, k_pop, seg_set)
    paths.metrics_json.write_text(json.dumps(data, indent=2))
    return paths


def _check_runs(runs: Sequence[RunEvaluation], split: PreparedSplit, table_ks: Sequence[int], headline: str) -> None:
    if not runs:
        raise ValueError("write_report needs at least one run")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}; rename the duplicates")
    first = runs[0].result
    for run in runs:
        res = run.result
        if res.per_user is None:
            raise ValueError(f"run {run.name!r} has no per-user data; evaluate it with keep_per_user=True")
        if res.stage != first.stage:
            raise ValueError(f"runs were evaluated on different stages ({first.stage!r} and {res.stage!r})")
        if not np.array_equal(res.per_user.users, first.per_user.users):  # type: ignore[union-attr]
            raise ValueError(
                f"run {run.name!r} was evaluated on other users than {runs[0].name!r}; evaluate every run on the same "
                f"split ({split!r})"
            )
        missing = [f"ndcg@{k}" for k in table_ks if f"ndcg@{k}" not in res.metrics] + (
            [] if headline in res.metrics else [headline]
        )
        if missing:
            raise ValueError(f"run {run.name!r} lacks {missing}; evaluate it with ks including {list(table_ks)}")
        if headline not in res.per_user.metrics:  # type: ignore[union-attr]
            raise ValueError(f"headline {headline!r} is not a per-user metric; pick e.g. 'ndcg@10'")
        if res.per_user.users.size and res.per_user.users.max() >= split.n_users:  # type: ignore[union-attr]
            raise ValueError(f"run {run.name!r} has user indices beyond {split!r}; it belongs to another split")


def _comparison_table(runs: Sequence[RunEvaluation], table_ks: Sequence[int]) -> pd.DataFrame:
    columns = [f"{name}@{k}" for k in table_ks for name in ALL_METRIC_NAMES]
    rows = {r.name: {c: r.result.metrics[c] for c in columns} for r in runs}
    table = pd.DataFrame.from_dict(rows, orient="index")[columns]
    for key in ("train_seconds", "epochs", "eval_seconds"):
        values = {r.name: r.info.get(key) for r in runs}
        if any(v is not None for v in values.values()):
            table[key] = pd.Series(values, dtype=float)
    return table


def _per_k(comparison: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The comparison split into one narrow table per K (columns keep their full ``name@k``); the run facts (train
    seconds...) go with the first."""
    ks = list(dict.fromkeys(c.split("@")[1] for c in comparison.columns if "@" in c))
    facts = [c for c in comparison.columns if "@" not in c]
    return [
        (k, comparison[[c for c in comparison.columns if c.endswith(f"@{k}")] + (facts if i == 0 else [])])
        for i, k in enumerate(ks)
    ]


def _best(table: pd.DataFrame, column: str) -> set[str]:
    values = table[column].astype(float)
    if column in ("train_seconds", "epochs", "eval_seconds") or values.isna().all():
        return set()
    lower = column.split("@")[0] in LOWER_IS_BETTER
    target = values.min() if lower else values.max()
    return set(values.index[np.isclose(values, target, rtol=0, atol=1e-12)])


def _segment_tables(
    runs: Sequence[RunEvaluation], split: PreparedSplit, users: np.ndarray, headline: str
) -> list[_SegmentTable]:
    segs = [breakdown.activity_segmentation(split, users), *breakdown.demographic_segmentations(split, users)]
    out = []
    for seg in segs:
        table = None
        for run in runs:
            means = breakdown.segment_means(run.result.per_user, seg, headline)  # type: ignore[arg-type]
            if table is None:
                table = means[["n_users"]].astype(int)
            table[run.name] = means[headline]
        winners = {str(label): str(row.drop("n_users").astype(float).idxmax()) for label, row in table.iterrows()}
        out.append(_SegmentTable(seg.name, table, winners))
    return out


def _segment_set_metrics(
    runs: Sequence[RunEvaluation], headline: str, requested: Sequence[str] | None
) -> tuple[str, ...]:
    if requested:
        metrics = tuple(dict.fromkeys(str(m) for m in requested))
    else:
        k = headline.rsplit("@", 1)[-1]
        metrics = tuple(dict.fromkeys([headline, *(f"{name}@{k}" for name in SEGMENT_SET_METRICS)]))
    available = runs[0].result.per_user.metrics  # type: ignore[union-attr]
    missing = [m for m in metrics if m not in available]
    if missing:
        raise ValueError(
            f"segment metrics {missing} were not evaluated per user; pick from {sorted(available)} or evaluate with "
            f"those K"
        )
    return metrics if headline in metrics else (headline, *metrics)


def _segment_set_table(
    runs: Sequence[RunEvaluation],
    split: PreparedSplit,
    users: np.ndarray,
    segment_set: breakdown.SegmentSet,
    metrics: tuple[str, ...],
) -> _SegmentSetTable:
    match = breakdown.match_segment_set(segment_set, split, users)
    clash = {ALL_USERS, NO_SEGMENT} & set(match.names)
    if clash:
        raise ValueError(f"segment set {segment_set.source}: segments may not be named {sorted(clash)}; rename them")
    none = breakdown.in_no_segment(match)
    labels = [ALL_USERS, *match.names, NO_SEGMENT]
    table = pd.DataFrame(index=labels)
    table["n_users"] = [len(users), *match.n_users, int(none.sum())]
    table["members"] = [math.nan, *match.members.astype(float), math.nan]
    best: dict[str, set[str]] = {}
    for metric in metrics:
        columns = []
        for run in runs:
            values = run.result.per_user.metrics[metric]  # type: ignore[union-attr]
            column = f"{metric} {run.name}"
            rest = float(values[none].mean()) if none.any() else math.nan
            table[column] = [
                float(values.mean()),
                *breakdown.segment_set_means(run.result.per_user, match, metric),
                rest,
            ]  # type: ignore[arg-type]
            columns.append(column)
        scores = table[columns].astype(float)
        lower = metric.split("@")[0] in LOWER_IS_BETTER
        target = scores.min(axis=1) if lower else scores.max(axis=1)
        for column in columns:
            hit = np.isclose(scores[column], target, rtol=0, atol=1e-12) & target.notna()
            best[column] = set(scores.index[hit.to_numpy()])
    return _SegmentSetTable(segment_set.source, metrics, table, best, match)


def _set_as_segments(seg_set: _SegmentSetTable, names: Sequence[str], headline: str) -> _SegmentTable:
    """The segment set's headline, shaped like a segmentation for the verdict (segments with evaluated users only)."""
    rows = [label for label in seg_set.table.index if label != ALL_USERS and seg_set.table.loc[label, "n_users"] > 0]
    table = seg_set.table.loc[rows, ["n_users", *(f"{headline} {name}" for name in names)]]
    table.columns = ["n_users", *names]
    winners = {str(label): str(row.drop("n_users").astype(float).idxmax()) for label, row in table.iterrows()}
    return _SegmentTable("segment", table, winners)


def _segment_set_svg(seg_set: _SegmentSetTable, names: Sequence[str], headline: str) -> str:
    table = seg_set.table.loc[[label for label in seg_set.table.index if seg_set.table.loc[label, "n_users"] > 0]]
    if len(table) > MAX_SEGMENT_BARS + 2:
        return ""
    bars = table[[f"{headline} {name}" for name in names]]
    bars.columns = list(names)
    return segment_bars_svg(bars, headline, f"{headline} by segment")


def _verdict(comparison: pd.DataFrame, segments: Sequence[_SegmentTable], headline: str) -> str:
    scores = comparison[headline].astype(float).sort_values(ascending=False)
    winner = str(scores.index[0])
    if len(scores) == 1:
        return f"Only one model: {winner}, {headline} = {scores.iloc[0]:.4f}."
    runner = str(scores.index[1])
    gap = (scores.iloc[0] - scores.iloc[1]) / scores.iloc[1] * 100 if scores.iloc[1] > 0 else math.inf
    text = (
        f"{winner} wins overall on {headline} ({scores.iloc[0]:.4f} vs {scores.iloc[1]:.4f} for {runner}, +{gap:.1f}%)."
    )
    total = sum(len(s.winners) for s in segments)
    exceptions = [
        f"{w} for {s.name} = {label} ({s.table.loc[label, w]:.4f} vs {s.table.loc[label, winner]:.4f}, "
        f"{int(s.table.loc[label, 'n_users'])} users)"
        for s in segments
        for label, w in s.winners.items()
        if w != winner
    ]
    won = total - len(exceptions)
    text += f" It also wins {won} of the {total} user segments below"
    if exceptions:
        text += "; the exceptions: " + "; ".join(exceptions) + "."
    else:
        text += ", every one of them."
    return text


def _fmt(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column.startswith("avg_pop"):
        return f"{value:.1f}"
    if column.endswith("_seconds"):
        return f"{value:.1f}"
    if column in ("epochs", "n_users", "members"):
        return f"{value:.0f}"
    return f"{value:.4f}"


# ---- HTML -----------------------------------------------------------------------------------------------------------


def _html_table(table: pd.DataFrame, best_by_column: Mapping[str, set[str]], first: str = "model") -> str:
    head = f'<tr><th class="name">{html.escape(first)}</th>' + "".join(
        f"<th>{html.escape(str(c))}</th>" for c in table.columns
    )
    rows = []
    for index, row in table.iterrows():
        cells = "".join(
            f'<td class="best">{_fmt(str(c), row[c])}</td>'
            if str(index) in best_by_column.get(str(c), set())
            else f"<td>{_fmt(str(c), row[c])}</td>"
            for c in table.columns
        )
        rows.append(f'<tr><td class="name">{html.escape(str(index))}</td>{cells}</tr>')
    return f'<div class="scroll"><table>{head}</tr>{"".join(rows)}</table></div>'


def _segment_best(seg: _SegmentTable) -> dict[str, set[str]]:
    """Highlight, per segment row, the winning run's cell (keyed the way _html_table looks cells up)."""
    out: dict[str, set[str]] = {}
    for label, w in seg.winners.items():
        out.setdefault(w, set()).add(label)
    return out


def _html(
    header: Mapping[str, Any],
    verdict: str,
    comparison: pd.DataFrame,
    segments: Sequence[_SegmentTable],
    figures: Mapping[str, Any],
    tail: Mapping[str, float],
    headline: str,
    k_pop: int,
    seg_set: _SegmentSetTable | None = None,
) -> str:
    best = {c: _best(comparison, c) for c in comparison.columns}
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(header['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(header['title'])}</h1>",
        f"<p class='meta'>split {html.escape(header['dataset'])} / {html.escape(header['config_hash'])}: "
        f"{header['n_users']:,} users, {header['n_items']:,} items; stage <b>{html.escape(header['stage'])}</b>, "
        f"{header['n_users_evaluated']:,} users evaluated, {header['n_users_skipped']:,} skipped (no "
        f"{html.escape(header['stage'])} items). Full ranking over all items, training items masked"
        f"{' (and validation items)' if header['stage'] == 'test' else ''}; metrics as RecBole 1.2 defines them. "
        f"Generated {html.escape(header['created_at'])}.</p>",
        f"<p class='verdict'>{html.escape(verdict)}</p>",
        "<h2 id='comparison'>Comparison</h2>",
        "<p class='note'>Best value per column in green (highest, except avg_pop: lowest = least popularity bias). "
        "novelty = mean self-information −log2(share of users who know the item); coverage = share of the catalogue "
        "recommended to anyone.</p>",
        *(_html_table(t, {c: best[c] for c in t.columns}, first=f"model @{k}") for k, t in _per_k(comparison)),
        f"<h2 id='curves'>Metrics at K = 1…{header['max_k']}</h2>",
        f"<div class='fig'>{figures['curves']}</div>",
        f"<h2 id='segments'>Who each model serves: {html.escape(headline)} by user segment</h2>",
        "<p class='note'>The winning model of each segment (row) is highlighted.</p>",
    ]
    for seg in segments:
        parts.append(f"<h3>By {html.escape(seg.name)}</h3>")
        parts.append(_html_table(seg.table, _segment_best(seg), first=seg.name))
        parts.append(f"<div class='fig'>{figures['segments'][seg.name]}</div>")
    if seg_set is not None:
        parts += [
            f"<h2 id='segment-set'>Per segment: {html.escape(', '.join(seg_set.metrics))}</h2>",
            f"<p class='note'>{html.escape(_segment_set_note(seg_set))}</p>",
            _html_table(seg_set.table, seg_set.best, first="segment"),
            f"<div class='fig'>{figures['segment_set']}</div>" if figures["segment_set"] else "",
        ]
    parts += [
        "<h2 id='popularity'>Popularity bias</h2>",
        f"<p class='note'>Points above the dashed line recommend more popular items than the user consumes. Long-tail "
        f"share at K={k_pop}: " + ", ".join(f"{html.escape(r)} {v:.1%}" for r, v in tail.items()) + ".</p>",
        f"<div class='fig'>{figures['popularity']}</div>",
        "</body></html>",
    ]
    return "\n".join(parts)


# ---- Markdown and JSON ----------------------------------------------------------------------------------------------


def _md_table(table: pd.DataFrame, best_by_column: Mapping[str, set[str]], first: str) -> str:
    lines = [
        "| " + " | ".join([first, *map(str, table.columns)]) + " |",
        "|" + "---|" * (len(table.columns) + 1),
    ]
    for index, row in table.iterrows():
        cells = []
        for c in table.columns:
            text = _fmt(str(c), row[c])
            cells.append(f"**{text}**" if str(index) in best_by_column.get(str(c), set()) else text)
        lines.append("| " + " | ".join([str(index), *cells]) + " |")
    return "\n".join(lines)


def _markdown(
    header: Mapping[str, Any],
    verdict: str,
    comparison: pd.DataFrame,
    segments: Sequence[_SegmentTable],
    tail: Mapping[str, float],
    headline: str,
    k_pop: int,
    seg_set: _SegmentSetTable | None = None,
) -> str:
    best = {c: _best(comparison, c) for c in comparison.columns}
    parts = [
        f"# {header['title']}",
        "",
        f"Split {header['dataset']} / {header['config_hash']} ({header['n_users']:,} users, {header['n_items']:,} "
        f"items), stage **{header['stage']}**: {header['n_users_evaluated']:,} users evaluated, "
        f"{header['n_users_skipped']:,} skipped. Generated {header['created_at']}. Figures: report.html.",
        "",
        f"> {verdict}",
        "",
        "## Comparison",
        "",
        "\n\n".join(_md_table(t, {c: best[c] for c in t.columns}, f"model @{k}") for k, t in _per_k(comparison)),
        "",
        f"## {headline} by user segment",
    ]
    for seg in segments:
        parts += ["", f"### By {seg.name}", "", _md_table(seg.table, _segment_best(seg), seg.name)]
    if seg_set is not None:
        parts += [
            "",
            f"## Per segment: {', '.join(seg_set.metrics)}",
            "",
            _segment_set_note(seg_set),
            "",
            _md_table(seg_set.table, seg_set.best, "segment"),
        ]
    parts += [
        "",
        "## Popularity bias",
        "",
        f"Long-tail share of the top-{k_pop} (items outside the 20% most popular): "
        + ", ".join(f"{r} {v:.1%}" for r, v in tail.items())
        + ".",
        "",
    ]
    return "\n".join(parts)


def _json(
    header: Mapping[str, Any],
    verdict: str,
    runs: Sequence[RunEvaluation],
    segments: Sequence[_SegmentTable],
    tail: Mapping[str, float],
    curves: Mapping[str, Mapping[str, np.ndarray]],
    k_pop: int,
    seg_set: _SegmentSetTable | None = None,
) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, (np.integer, np.floating)):
            return value.item()
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {
        **header,
        "verdict": verdict,
        "runs": [
            {
                "name": r.name,
                "metrics": r.result.metrics,
                "ks": list(r.result.ks),
                "n_users_evaluated": r.result.n_users_evaluated,
                "n_users_skipped": r.result.n_users_skipped,
                "info": plain(dict(r.info)),
                f"long_tail_share@{k_pop}": tail[r.name],
                "curves": {m: [float(v) for v in values] for m, values in curves[r.name].items()},
            }
            for r in runs
        ],
        "segments": {
            s.name: {
                str(label): {"n_users": int(row["n_users"]), **{r.name: float(row[r.name]) for r in runs}}
                for label, row in s.table.iterrows()
            }
            for s in segments
        },
        "segment_winners": {s.name: s.winners for s in segments},
        **({"segment_set": _segment_set_json(seg_set, runs)} if seg_set is not None else {}),
    }


def _segment_set_note(seg_set: _SegmentSetTable) -> str:
    match = seg_set.match
    return (
        f"Segments of {seg_set.source}: {len(match.names)} segments; a user in several counts in each. n_users = "
        f"members evaluated; members = users of the table in that segment. Of the table's users, "
        f"{match.n_not_in_split:,} are not in the split (ids it does not know) and {match.n_not_evaluated:,} are in "
        f"it but were not evaluated (no items in the stage); both are left out. The best model per metric and "
        f"segment is highlighted."
    )


def _segment_set_json(seg_set: _SegmentSetTable, runs: Sequence[RunEvaluation]) -> dict[str, Any]:
    def num(value: Any) -> float | None:
        return None if value is None or math.isnan(float(value)) else float(value)

    match = seg_set.match
    extra = {
        name: {"members": int(m), "not_in_split": int(o), "not_evaluated": int(e)}
        for name, m, o, e in zip(match.names, match.members, match.not_in_split, match.not_evaluated, strict=True)
    }
    return {
        "source": seg_set.source,
        "metrics": list(seg_set.metrics),
        "n_not_in_split": match.n_not_in_split,
        "n_not_evaluated": match.n_not_evaluated,
        "segments": {
            str(label): {
                "n_users": int(row["n_users"]),
                **extra.get(str(label), {}),
                "metrics": {r.name: {m: num(row[f"{m} {r.name}"]) for m in seg_set.metrics} for r in runs},
            }
            for label, row in seg_set.table.iterrows()
        },
    }
