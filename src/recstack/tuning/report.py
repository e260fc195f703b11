"""The tuning report (``<study>/report.html``, one self-contained file, styled like the evaluation report): the
optimisation history, parameter importances and the top trials, with the winner's one test reading."""

from __future__ import annotations

import html
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import optuna
from optuna.trial import FrozenTrial, TrialState

from recstack.evaluation.page_style import PAGE_CSS as _CSS
from recstack.evaluation.report_plots import _STYLE, _svg
from recstack.training import runs
from recstack.tuning.outputs import Winner

log = logging.getLogger(__name__)

TOP_TRIALS = 10


def importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's fANOVA importances over the completed trials (empty with fewer than 2, or when nothing varied)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {
                k: float(v)
                for k, v in optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
                ).items()
            }
    except (RuntimeError, ValueError) as error:  # e.g. every completed trial drew the same values
        log.info("parameter importances not computed: %s", error)
        return {}


def _history_svg(trials: Sequence[FrozenTrial]) -> str:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.5, 3.2))
        ax.scatter([t.number for t in done], [t.value for t in done], s=18, color="tab:blue", label="completed")
        if pruned:
            last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
            ax.scatter(
                [t.number for t in pruned], last, s=18, marker="x", color="tab:red", label="pruned (last epoch's value)"
            )
        best, xs, ys = -math.inf, [], []
        for t in sorted(done, key=lambda t: t.number):
            best = max(best, float(t.value))  # type: ignore[arg-type]
            xs.append(t.number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="tab:green", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel("valid ndcg@10")
        ax.legend(loc="lower right", fontsize=8)
        return _svg(fig)


def _importance_svg(values: Mapping[str, float]) -> str:
    names = list(values)[::-1]
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.35 * len(names)))
        ax.barh(names, [values[n] for n in names], color="tab:blue")
        ax.set_xlabel("importance (fANOVA, share of the variance of valid ndcg@10)")
        return _svg(fig)


def best_epoch_is_last(trial: FrozenTrial) -> bool:
    """The flag the trial's run wrote in its metrics.json: its best validation epoch was its last (still improving
    when the cap, or the study's deadline, stopped it). False when the run folder or the flag is missing."""
    run_dir = trial.user_attrs.get("run_dir")
    if not run_dir:
        return False
    try:
        return bool(runs.read_metrics(run_dir).get("best_epoch_is_last", False))
    except (OSError, ValueError):
        return False


def _epoch_marks(trial: FrozenTrial) -> str:
    """`` last``: best epoch = last epoch; `` budget``: stopped by the study's deadline."""
    return (" last" if best_epoch_is_last(trial) else "") + (" budget" if trial.user_attrs.get("cut_by_budget") else "")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return html.escape(str(value))


def _top_table(trials: Sequence[FrozenTrial], keys: Sequence[str], winner: int | None) -> str:
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -float(t.value))  # type: ignore[arg-type]
    head = ["trial", "valid ndcg@10", *keys, "epochs (best)", "seconds"]
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for t in done[:TOP_TRIALS]:
        epochs = t.user_attrs.get("epochs")
        best = t.user_attrs.get("best_epoch")
        seconds = t.user_attrs.get("train_seconds")
        cells = [
            str(t.number),
            f"{t.value:.4f}",
            *(_fmt(t.params.get(k, "")) for k in keys),
            f"{epochs} ({best}){_epoch_marks(t)}" if epochs is not None else "",
            f"{seconds:.1f}" if seconds else "",
        ]
        cls = " class='best'" if t.number == winner else ""
        rows.append("<tr>" + "".join(f"<td{cls}>{c}</td>" for c in cells) + "</tr>")
    return "<div class='scroll'><table>" + "".join(rows) + "</table></div>"


def _last_epoch_note(trials: Sequence[FrozenTrial]) -> list[str]:
    """A warning when completed trials had their best epoch at their last one (metrics.json ``best_epoch_is_last``)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    flagged = [t for t in done if best_epoch_is_last(t)]
    if not flagged:
        return []
    by_budget = sum(bool(t.user_attrs.get("cut_by_budget")) for t in flagged)
    return [
        f"<p class='note'><b>{len(flagged)} of {len(done)} completed trials had their best epoch at their last "
        f"(&quot;last&quot; above; {by_budget} of them stopped by the deadline)</b>: they were still improving, so "
        "fit.max_epochs is too low for them (or the budget too short); raise it in configs/fit/&lt;model&gt;.yaml or "
        "search it.</p>"
    ]


def page_head(title: str) -> list[str]:
    """The opening of a self-contained report page in the evaluation report's style, down to its ``<h1>``."""
    return [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]


def facts_html(facts: Mapping[str, Any]) -> str:
    """``name <b>value</b>; ...``, escaped: the settings a report's meta line names."""
    return "; ".join(f"{html.escape(str(k))} <b>{html.escape(str(v))}</b>" for k, v in facts.items())


def write_report(
    study: optuna.Study,
    out_dir: Path,
    *,
    keys: Sequence[str],
    winner: Winner | None,
    facts: Mapping[str, Any],
) -> Path:
    """Write ``<out_dir>/report.html``; ``facts`` (dataset, split, model, budget, wall time ...) head it."""
    trials = study.get_trials(deepcopy=False)
    counts = {
        s.name.lower(): sum(t.state == s for t in trials)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    imp = importances(study)
    parts = [
        *page_head(f"recstack tuning: {study.study_name}"),
        f"<p class='meta'>{facts_html(facts)}. Trials: {counts['complete']} completed, {counts['pruned']} pruned, "
        f"{counts['fail']} failed. Objective: validation NDCG@10 (full ranking); the test split was never read by a trial. "
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')}.</p>",
    ]
    if winner is not None:
        params = ", ".join(f"{k} = {_fmt(v)}" for k, v in winner.params.items())
        parts.append(
            f"<p class='verdict'>Best: trial {winner.trial_number} ({params}): valid NDCG@10 "
            f"{winner.valid['ndcg@10']:.4f}; test (read once, for this trial only) NDCG@10 {winner.test['ndcg@10']:.4f}, "
            f"Recall@10 {winner.test['recall@10']:.4f}, MAP@10 {winner.test['map@10']:.4f}.</p>"
        )
    parts += ["<h2>Optimisation history</h2>", f"<div class='fig'>{_history_svg(trials)}</div>"]
    parts.append("<h2>Parameter importances</h2>")
    if imp:
        table = "".join(f"<tr><td class='name'>{html.escape(k)}</td><td>{v:.3f}</td></tr>" for k, v in imp.items())
        parts += [
            f"<div class='fig'>{_importance_svg(imp)}</div>",
            f"<table><tr><th class='name'>parameter</th><th>importance</th></tr>{table}</table>",
        ]
    else:
        parts.append("<p class='note'>Needs at least 2 completed trials with different values.</p>")
    parts += [
        f"<h2>Top trials</h2><p class='note'>The best {TOP_TRIALS} completed trials; the winner in green; &quot;budget&quot;: stopped by the deadline, not by early stopping. Each "
        "trial's run folder is trials/trial-&lt;n&gt;/ (config.yaml, metrics.json, tuning.json).</p>",
        *_last_epoch_note(trials),
        _top_table(trials, keys, winner.trial_number if winner else None),
        "</body></html>",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text("\n".join(parts))
    return path
