"""``auto(cfg)``: the best model this stack finds for a dataset within a wall-clock budget, then its bundle.

``cfg`` is ``configs/auto.yaml`` composed. In order:

1. check everything before any data is read: the candidate names (:mod:`.candidates`), their search spaces and
   ``per_model`` overrides, and that the budget holds at least one trial of every candidate (:mod:`.allocation`);
2. prepare the split once and search (:mod:`.search`): the validation split only;
3. with ``two_stage``, score more candidates in the reserve: each exportable candidate's retrieval re-ranked by the
   best item-item one (EASE), as served (:mod:`.two_stage`);
4. pick the winner by validation NDCG@10 and read the test split once (:mod:`.finish`: a trained model as its best
   trial left it, a baseline fitted again; a two-stage winner: both parts, read on test through its bundle), and
   record how its best trial(s) are trained again (``winner/provenance.json``, :mod:`.provenance`);
5. export a bundle (the winner, or the best exportable candidate when the winner has no vectors to serve);
6. write ``auto.json`` and ``report.html`` (:mod:`.report`) in the output folder.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recstack.auto.allocation import Plan, minimum_budget, plan_budget
from recstack.auto.candidates import Candidate, build_candidates
from recstack.auto.finish import Export, Refit, export_bundle, refit_winner
from recstack.auto.provenance import PROVENANCE_FILE, Provenance, winner_provenance, write_provenance
from recstack.auto.report import write_reports
from recstack.auto.search import CandidateResult, Limits, Search
from recstack.auto.two_stage import pick_parts, refit_two_stage, score_two_stage, two_stage_name
from recstack.data.prepared import PreparedSplit
from recstack.export.erasure import Erasures
from recstack.retrieval.index import IndexConfig
from recstack.tuning.budget import format_duration, parse_duration

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoSettings:
    """``configs/auto.yaml``'s own settings, typed."""

    budget_s: float
    cheap_share: float
    reserve_share: float
    eta: int
    limits: Limits
    out: Path | None
    export: bool
    text: bool
    index_config: IndexConfig
    two_stage: bool
    ks: tuple[int, ...]

    @classmethod
    def from_config(cls, cfg: DictConfig) -> AutoSettings:
        limits = Limits(cheap_trials=int(cfg.cheap_trials), deep_trials=int(cfg.deep_trials))
        if min(limits.cheap_trials, limits.deep_trials) < 1:
            raise ValueError(f"cheap_trials={limits.cheap_trials}, deep_trials={limits.deep_trials}: must be >= 1")
        index = OmegaConf.to_container(cfg.export.index, resolve=True)
        assert isinstance(index, dict)
        return cls(
            budget_s=parse_duration(cfg.budget),
            cheap_share=float(cfg.cheap_share),
            reserve_share=float(cfg.reserve_share),
            eta=int(cfg.eta),
            limits=limits,
            out=Path(cfg.out) if cfg.get("out") else None,
            export=bool(cfg.export.enabled),
            text=bool(cfg.export.text),
            index_config=IndexConfig.from_mapping(index),  # type: ignore[arg-type]
            two_stage=bool(cfg.get("two_stage", False)),
            ks=tuple(int(k) for k in cfg.ks),
        )


@dataclass(frozen=True)
class AutoResult:
    out_dir: Path
    dataset: str
    split_hash: str
    plan: Plan
    candidates: tuple[CandidateResult, ...]  # ranked by validation score, best first
    winner: str | None
    refit: Refit | None
    export: Export | None
    report: Path
    summary_json: Path
    seconds: float


def make_plan(settings: AutoSettings, candidates: tuple[Candidate, ...], budget_s: float | None = None) -> Plan:
    """The plan of ``budget_s`` (default: the whole budget), or a ValueError naming the minimum budget when it cannot
    give every candidate one trial."""
    cheap = [c.name for c in candidates if c.kind == "cheap"]
    deep = [c.name for c in candidates if c.kind == "deep"]
    shares = {"cheap_share": settings.cheap_share, "reserve_share": settings.reserve_share, "eta": settings.eta}
    budget_s = settings.budget_s if budget_s is None else budget_s
    plan = plan_budget(budget_s, cheap, deep, **shares)
    need, name = minimum_budget({c.name: c.min_trial_s for c in candidates}, cheap, deep, **shares)
    if budget_s < need:
        c = next(c for c in candidates if c.name == name)
        whole = math.ceil(need / 60) * 60 if need > 60 else math.ceil(need)
        raise ValueError(
            f"budget={format_duration(settings.budget_s)} is too small for even one trial of every candidate: the "
            f"minimum is {format_duration(math.ceil(need))} for models={[c.name for c in candidates]} (here {name}'s "
            f"first share would be {plan.first_slice(name):.0f} s; it must hold its min_trial "
            f"{format_duration(c.min_trial_s)} from configs/tune/{name}.yaml, after reserve_share="
            f"{settings.reserve_share} for the refit and export); pass budget={format_duration(whole)} or more, or "
            f"leave {name} out of models="
        )
    return plan


def default_out(split: PreparedSplit, root: str | Path = "outputs/auto") -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", split.dataset).strip("_").lower()
    return Path(root) / f"{slug}-{split.config_hash}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def rank(results: list[CandidateResult]) -> tuple[CandidateResult, ...]:
    """Best validation score first; candidates without one last; ties keep the search order (cheaper first)."""
    order = {r.name: i for i, r in enumerate(results)}
    return tuple(sorted(results, key=lambda r: (r.valid_score is None, -(r.valid_score or 0.0), order[r.name])))


def auto(
    cfg: DictConfig,
    split: PreparedSplit | None = None,
    *,
    erasures: Callable[[], Erasures | None] | None = None,
) -> AutoResult:
    """Run ``recstack-auto`` (see the module docstring). ``erasures``: who to leave out of the bundle, asked once the
    settings are checked and before the search (``recstack-auto`` reads the lake and Redis like ``recstack-export``);
    None: nobody."""
    started = time.time()
    settings = AutoSettings.from_config(cfg)
    candidates = build_candidates(cfg)
    plan = make_plan(settings, candidates)
    # A two-stage winner's bundle is written whatever export.enabled says (its test reading goes through it).
    erased = erasures() if (erasures is not None and (settings.export or settings.two_stage)) else None
    if split is None:
        from recstack.config import prepare_from_config

        split = prepare_from_config(cfg, progress=bool(cfg.get("progress", False)))
    out_dir = settings.out or default_out(split)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "recstack-auto: %s, budget %s, candidates %s, out %s",
        split,
        format_duration(settings.budget_s),
        [c.name for c in candidates],
        out_dir,
    )
    # The phases start now: preparing the data (and importing, composing) is not taken from the first candidates.
    search_started = time.time()
    setup_s = search_started - started
    try:
        plan = make_plan(settings, candidates, settings.budget_s - setup_s)
    except ValueError as error:
        plan = plan_budget(
            max(settings.budget_s - setup_s, 0.0),
            plan.cheap,
            plan.deep,
            cheap_share=settings.cheap_share,
            reserve_share=settings.reserve_share,
            eta=settings.eta,
        )
        log.warning(
            "setting up took %.0f s of the budget; candidates without time for a trial are skipped: %s", setup_s, error
        )
    results = Search(candidates, plan, split, out_dir, settings.limits, search_started).run()
    by_name = {c.name: c for c in candidates}
    pairs = pick_parts(rank(results), by_name) if settings.two_stage else []
    for pair in pairs:  # in the reserve: seconds each, no training
        log.info("two-stage candidate %s", two_stage_name(pair[0].name, pair[1].name))
        results.append(
            score_two_stage(*pair, split, out_dir, ks=settings.ks, index_config=settings.index_config, erasures=erased)
        )
    ranked = rank(results)
    winner = ranked[0] if ranked and ranked[0].valid_score is not None else None
    refit = export = None
    provenance: Provenance | None = None
    if winner is not None:
        refit_dir = out_dir / "winner"
        if refit_dir.exists():  # an earlier recstack-auto into the same out=: its refit is replaced, like its bundle
            log.info("replacing the earlier refit in %s", refit_dir)
            shutil.rmtree(refit_dir)
        chosen: tuple[tuple[Candidate, CandidateResult], ...]
        if winner.parts:
            (parts,) = [p for p in pairs if (p[0].name, p[1].name) == winner.parts]
            pair = ((by_name[parts[0].name], parts[0]), (by_name[parts[1].name], parts[1]))
            chosen = pair
            # The pipeline is read on test through its bundle, so it is exported even with export.enabled=false.
            refit, export = refit_two_stage(
                winner,
                pair,
                split,
                refit_dir,
                out_dir / "bundle",
                ks=settings.ks,
                index_config=settings.index_config,
                text=settings.text,
                erasures=erased,
            )
        else:
            chosen = ((by_name[winner.name], winner),)
            refit = refit_winner(by_name[winner.name], winner, split, refit_dir)
        # What the winner's validation score came from and the command that trains it again (.provenance).
        provenance = winner_provenance(
            cfg, winner, chosen, out_dir, dataset=split.dataset, split_hash=split.config_hash
        )
        write_provenance(provenance, refit_dir / PROVENANCE_FILE)
        if settings.export and export is None:
            order = [(by_name[winner.name], refit.run_dir)]
            order += [(by_name[r.name], r.run_dir) for r in ranked[1:] if r.run_dir is not None and r.name in by_name]
            export = export_bundle(
                order,
                out_dir / "bundle",
                winner=winner.name,
                index_config=settings.index_config,
                text=settings.text,
                erasures=erased,
            )
    seconds = time.time() - started
    report, summary_json = write_reports(
        out_dir,
        dataset=split.dataset,
        split_hash=split.config_hash,
        plan=plan,
        candidates=ranked,
        refit=refit,
        export=export,
        provenance=provenance,
        seconds=seconds,
        settings={
            "budget": format_duration(settings.budget_s),
            "models": [c.name for c in candidates],
            "cheap_share": settings.cheap_share,
            "reserve_share": settings.reserve_share,
            "eta": settings.eta,
            "two_stage": settings.two_stage,
            "cheap_trials": settings.limits.cheap_trials,
            "deep_trials": settings.limits.deep_trials,
            "seed": int(cfg.seed),
            "setup seconds": round(setup_s, 1),
        },
    )
    return AutoResult(
        out_dir=out_dir,
        dataset=split.dataset,
        split_hash=split.config_hash,
        plan=plan,
        candidates=ranked,
        winner=winner.name if winner else None,
        refit=refit,
        export=export,
        report=report,
        summary_json=summary_json,
        seconds=seconds,
    )


def summary(result: AutoResult) -> str:
    """The lines ``recstack-auto`` prints."""
    lines = [f"recstack-auto: {result.dataset} ({result.split_hash}), {result.seconds:.0f} s"]
    width = max([9, *(len(r.name) for r in result.candidates)])
    for i, r in enumerate(result.candidates, 1):
        score = f"{r.valid_score:.4f}" if r.valid_score is not None else "  -   "
        mark = "  <- winner" if r.name == result.winner else ""
        last = "  best epoch = last: raise max_epochs" if r.best_epoch_is_last else ""
        cost = f"{r.completed} trials, {r.pruned} pruned"
        if r.parts:
            blend = f"{r.blend_weight:.1f}" if r.blend_weight is not None else "-"
            cost = f"two-stage, blend weight {blend}"
        lines.append(
            f"  {i}. {r.name:<{width}} valid ndcg@10 {score}  {r.seconds:6.0f} s  {cost}"
            f"{'  ' + r.status if r.status != 'done' else ''}{mark}{last}"
        )
    if result.refit is not None:
        t = result.refit.test
        how = f"{result.refit.name} refit"
        if result.refit.parts:
            how += (
                f" of both parts, through its bundle: blend weight {result.refit.blend_weight:.1f}, valid ndcg@10 "
                f"{result.refit.valid['ndcg@10']:.4f}"
            )
        lines.append(
            f"  test (read once, {how}): ndcg@10 {t['ndcg@10']:.4f}  recall@10 {t['recall@10']:.4f}  map@10 "
            f"{t['map@10']:.4f}"
        )
    else:
        lines.append("  no winner: no candidate completed a trial (see the report)")
    if result.export is not None:
        lines.append(f"  bundle: {result.export.bundle or '-'}: {result.export.note}")
    lines += [f"  report: {result.report}", f"  summary: {result.summary_json}"]
    return "\n".join(lines)
