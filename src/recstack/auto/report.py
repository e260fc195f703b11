"""``recstack-auto``'s record: ``auto.json`` (everything, machine-readable) and ``report.html`` (one self-contained
file, styled like the evaluation and tuning reports): every candidate ranked by validation score with its cost, the
winner and its one test reading, what the bundle holds, and how the budget was spent. A two-stage winner
(:mod:`.two_stage`) is shown with its parts, its blend weight and its pipeline's validation and test scores."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from recstack.auto.allocation import Plan
from recstack.auto.finish import Export, Refit
from recstack.auto.provenance import PROVENANCE_FILE, Provenance
from recstack.auto.search import CandidateResult
from recstack.evaluation.report_plots import _STYLE, _svg
from recstack.tuning.report import facts_html, page_head

JSON_FILE = "auto.json"
REPORT_FILE = "report.html"


def _score_svg(candidates: Sequence[CandidateResult], winner: str | None) -> str:
    scored = [c for c in candidates if c.valid_score is not None][::-1]
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.0, 0.6 + 0.38 * max(len(scored), 1)))
        colours = ["tab:green" if c.name == winner else "tab:blue" for c in scored]
        ax.barh([c.name for c in scored], [c.valid_score for c in scored], color=colours)  # type: ignore[misc]
        for y, c in enumerate(scored):
            ax.annotate(f" {c.valid_score:.4f}  ({c.seconds:.0f} s)", (c.valid_score, y), va="center", fontsize=8)  # type: ignore[arg-type]
        ax.set_xlabel("valid ndcg@10 (best trial)")
        ax.set_xlim(0, max([c.valid_score for c in scored] + [1e-9]) * 1.3)  # type: ignore[type-var]
        return _svg(fig)


def _link(path: str | None, out_dir: Path, text: str) -> str:
    if not path:
        return ""
    rel = os.path.relpath(path, out_dir)
    return f"<a href='{html.escape(rel)}'>{html.escape(text)}</a>"


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _candidate_table(candidates: Sequence[CandidateResult], winner: str | None, out_dir: Path) -> str:
    head = [
        "rank",
        "model",
        "kind",
        "valid ndcg@10",
        "valid recall@10",
        "wall s",
        "time given s",
        "phases",
        "trials",
        "pruned",
        "failed",
        "epochs (best)",
        "best params",
        "study",
        "status",
    ]
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for i, c in enumerate(candidates, 1):
        epochs = ""
        if c.epochs is not None:
            marks = (" last" if c.best_epoch_is_last else "") + (" budget" if c.cut_by_budget else "")
            epochs = f"{c.epochs} ({c.best_epoch}){marks}"
        report = str(Path(c.study_dir) / "report.html") if c.study_dir else None
        link = _link(report, out_dir, "report")
        params = _params(c.params)
        if c.parts:  # the two-stage candidate: scored through its bundle, with the blend weight tuned on validation
            link = _link(c.bundle, out_dir, "bundle")
            blend = f"{c.blend_weight:.1f}" if c.blend_weight is not None else "-"
            params = f"retrieval {c.parts[0]}, re-rank {c.parts[1]} (best trials), blend weight {blend}"
        status = c.status + (f": {c.note}" if c.note else "")
        cells = [
            str(i),
            html.escape(c.name) + (" (winner)" if c.name == winner else ""),
            c.kind,
            f"{c.valid_score:.4f}" if c.valid_score is not None else "",
            f"{c.valid['recall@10']:.4f}" if c.valid else "",
            f"{c.seconds:.0f}",
            f"{c.given_s:.0f}" if c.given_s else "",
            html.escape(", ".join(c.phases)),
            str(c.completed),
            str(c.pruned),
            str(c.failed),
            epochs,
            html.escape(params),
            link,
            html.escape(status),
        ]
        cls = " class='best'" if c.name == winner else ""
        rows.append("<tr>" + "".join(f"<td{cls}>{cell}</td>" for cell in cells) + "</tr>")
    return "<div class='scroll'><table>" + "".join(rows) + "</table></div>"


def _plan_table(plan: Plan, candidates: Sequence[CandidateResult]) -> str:
    rows = ["<tr><th class='name'>phase</th><th>ends at s</th><th>candidates planned</th><th>ran in it</th></tr>"]
    reserve = "".join(f"{c.name} scored ({c.seconds:.0f} s), " for c in candidates if c.parts)
    for phase in plan.phases:
        phased = {c.name for c in candidates if phase.name in c.phases}
        ran = [n for n in (plan.deep if phase.is_rung else plan.cheap) if n in phased]  # in the order they ran
        rows.append(
            f"<tr><td class='name'>{html.escape(phase.name)}</td><td>{phase.end_s:.0f}</td><td>{phase.keep}</td>"
            f"<td>{html.escape(', '.join(ran))}</td></tr>"
        )
    rows.append(
        f"<tr><td class='name'>reserve</td><td>{plan.budget_s:.0f}</td><td></td><td>{html.escape(reserve)}refit, test "
        "once, export, reports</td></tr>"
    )
    return "<table>" + "".join(rows) + "</table>"


def _verdict(candidates: Sequence[CandidateResult], refit: Refit | None, export: Export | None) -> str:
    if refit is None:
        return "No winner: no candidate completed a trial within the budget (see the table); raise budget=."
    best = next(c for c in candidates if c.name == refit.name)
    t = refit.test
    scores = (
        f"valid NDCG@10 {best.valid_score:.4f} (refit: {refit.valid['ndcg@10']:.4f}). Test, read once for the "
        f"winner's refit only: NDCG@10 {t['ndcg@10']:.4f}, Recall@10 {t['recall@10']:.4f}, MAP@10 {t['map@10']:.4f}."
    )
    if refit.parts:
        parts = " and ".join(f"{p.name}{' (' + _params(p.params) + ')' if p.params else ''}" for p in refit.parts)
        text = (
            f"Winner: the two-stage pipeline {refit.name}, {parts}, both refitted; blend weight "
            f"{refit.blend_weight:.1f} (tuned on validation; {best.blend_weight:.1f} for the best trials), "
            f"the served pipeline's {scores}"
        )
    else:
        text = f"Winner: {refit.name}{' (' + _params(refit.params) + ')' if refit.params else ''}, {scores}"
    if export is not None:
        text += f" Bundle {export.bundle}: {export.note}." if export.bundle else f" {export.note}."
    return text


def _warnings(candidates: Sequence[CandidateResult], refit: Refit | None) -> list[str]:
    notes = []
    for c in candidates:
        if not c.trials_best_is_last:
            continue
        which = "its best trial included" if c.best_epoch_is_last else "not its best trial"
        if c.best_epoch_is_last and c.cut_by_budget:
            why = (
                "its best trial was stopped by its share of the budget, not by fit.max_epochs: its score is a lower "
                "bound; give it more time (a larger budget=, fewer models=, or a higher min_trial in "
                f"+per_model.{c.name}.tune.min_trial=...)"
            )
        else:
            why = f"fit.max_epochs is too low; raise it with +per_model.{c.name}.fit.max_epochs=..."
        notes.append(
            f"{c.name}: {c.trials_best_is_last} of {c.completed} completed trial(s) had their best validation epoch "
            f"at their last ({which}), still improving when stopped: {why}"
        )
    if refit is not None and refit.best_epoch_is_last:
        notes.append(f"The winner's refit ({refit.name}) had its best epoch at its last one as well.")
    return notes


def _provenance_html(provenance: Provenance, out_dir: Path) -> str:
    record = _link(str(out_dir / "winner" / PROVENANCE_FILE), out_dir, PROVENANCE_FILE)
    lines = [
        f"<code>{html.escape(p.command)}</code> ({html.escape(p.candidate)}"
        + (f", study {html.escape(p.trial.study_name)} trial {p.trial.trial_number}" if p.trial else "")
        + f": valid NDCG@10 {p.valid_ndcg_at_10:.4f})"
        for p in provenance.parts
    ]
    note = f" {html.escape(provenance.note)}." if provenance.note else ""
    return (
        f"<p class='note'>Train the winner's best trial(s) again (the same validation score; recorded in {record}):<br>"
        + "<br>".join(lines)
        + f"{note}</p>"
    )


def write_reports(
    out_dir: Path,
    *,
    dataset: str,
    split_hash: str,
    plan: Plan,
    candidates: Sequence[CandidateResult],
    refit: Refit | None,
    export: Export | None,
    seconds: float,
    settings: Mapping[str, Any],
    provenance: Provenance | None = None,
) -> tuple[Path, Path]:
    """Write ``<out_dir>/report.html`` and ``<out_dir>/auto.json`` (all of these arguments; ``provenance``, the
    winner's record, as ``winner_provenance``: the same fields as ``winner/provenance.json``); returns their paths."""
    data = {
        "dataset": dataset,
        "split_hash": split_hash,
        "settings": dict(settings),
        "wall_seconds": seconds,
        "plan": asdict(plan),
        "winner": refit.name if refit else None,
        "winner_provenance": asdict(provenance) if provenance else None,
        "candidates": [{"rank": i, **asdict(c)} for i, c in enumerate(candidates, 1)],
        "refit": asdict(refit) if refit else None,
        "export": asdict(export) if export else None,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / JSON_FILE
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    winner = refit.name if refit else None
    parts = [
        *page_head(f"recstack-auto: {dataset}"),
        f"<p class='meta'>split {html.escape(split_hash)}; {facts_html(settings)}; wall time <b>{seconds:.0f} s</b>. "
        "Every candidate was tuned on the validation split only (NDCG@10, full ranking); the test split was read once, "
        f"by the winner's refit. Generated {html.escape(data['created_at'])}.</p>",
        f"<p class='verdict'>{html.escape(_verdict(candidates, refit, export))}</p>",
    ]
    if provenance is not None:
        parts.append(_provenance_html(provenance, out_dir))
    warnings = _warnings(candidates, refit)
    if warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>")
    parts += [
        "<h2>Candidates</h2>",
        "<p class='note'>Ranked by their best trial's validation NDCG@10; the winner in green. Cost: wall time spent "
        "on the candidate (its studies, or its one run), the time the plan gave it, trials completed / pruned / "
        "failed. &quot;last&quot;: the best epoch was the last one (still improving); &quot;budget&quot;: the best "
        "trial was stopped by the candidate's time share. Each study's own report "
        "(history, importances, top trials) is linked. A two-stage candidate (&quot;retrieval -&gt; re-rank&quot;) "
        "is the served pipeline of an exportable candidate's best trial re-ranked by the best item-item "
        "candidate's, blend weight tuned on validation; scored in the reserve through its bundle (linked), no "
        "training.</p>",
        _candidate_table(candidates, winner, out_dir),
        f"<div class='fig'>{_score_svg(candidates, winner)}</div>",
        "<h2>How the budget was spent</h2>",
        f"<p class='note'>Budget after setting up (composing, preparing the data) {plan.budget_s:.0f} s, counted "
        f"from the search's start: {plan.reserve_s:.0f} s kept for the refit, the test reading, "
        f"the export and the reports; the cheap candidates ({html.escape(', '.join(plan.cheap) or 'none')}) first, "
        f"then the deep ones ({html.escape(', '.join(plan.deep) or 'none')}) by successive halving (eta "
        f"{plan.eta}): each rung has the same time, split among the candidates in it, and only the best go on. "
        "Untuned candidates are trained once, before the cheap phase. Time a candidate leaves unused goes to the "
        "next one.</p>",
        _plan_table(plan, candidates),
        "</body></html>",
    ]
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(parts))
    return path, json_path
