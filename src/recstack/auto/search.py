"""The search: every candidate tuned on the validation split within its share of the budget (:mod:`.allocation`).

Untuned candidates are trained once; every other one runs a ``recstack-tune`` study (:func:`recstack.tuning.tune.tune`
with ``test_winner=false``: no trial and no study reads the test split) under ``<out>/studies/``, resumed from its
SQLite file when a later rung gives it more time; its first trial is the model's default configuration
(:func:`enqueue_defaults`), then the sampler's. A later session of a study seeds its sampler anew (seed + session), or
it would draw the values of the first session again. A candidate that fails is recorded with its error and the search
goes on without it.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

from recstack.auto.allocation import Plan, halve, leftover_next, slice_now
from recstack.auto.candidates import Candidate, Kind
from recstack.data.prepared import PreparedSplit
from recstack.training import runs
from recstack.training.train import train
from recstack.tuning import space, study
from recstack.tuning.budget import format_duration
from recstack.tuning.objective import METRIC, trial_dir
from recstack.tuning.report import best_epoch_is_last
from recstack.tuning.tune import TuneResult, tune

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Trial limits per study: a cheap model's few parameters are covered quickly; a deep one runs to its deadline."""

    cheap_trials: int
    deep_trials: int


@dataclass(frozen=True)
class CandidateResult:
    """One candidate after the search: its best validation score and what it cost."""

    name: str
    kind: Kind
    status: str  # "done", "skipped" (no time left for a trial), "failed"
    valid_score: float | None  # best validation NDCG@10
    valid: dict[str, float] | None  # the best trial's validation metrics
    best_trial: int | None
    params: dict[str, Any]
    run_dir: str | None  # the best trial's run folder (its best checkpoint)
    seconds: float  # wall time spent on it
    given_s: float  # time the plan gave it (all phases)
    phases: tuple[str, ...]  # phases it ran in
    completed: int
    pruned: int
    failed: int
    exhausted: bool  # its study reached its trial limit
    epochs: int | None  # the best trial's epochs and best epoch (trained models)
    best_epoch: int | None
    best_epoch_is_last: bool  # the best trial's metrics.json flag: still improving when it stopped
    cut_by_budget: bool  # the best trial was stopped by its study's deadline, not by early stopping or the cap
    trials_best_is_last: int  # completed trials with that flag
    study_dir: str | None
    note: str = ""
    # The two-stage candidate (:mod:`.two_stage`): its parts (retrieval, re-ranker), the blend weight tuned on
    # validation and the bundle it was scored through; empty for a single model.
    parts: tuple[str, ...] = ()
    blend_weight: float | None = None
    bundle: str | None = None
    experiment: str | None = None  # a tuned candidate: the experiment file its study wrote for its best trial


@dataclass
class _Tally:
    """A candidate's record while the search runs."""

    candidate: Candidate
    seconds: float = 0.0
    given_s: float = 0.0
    phases: list[str] = field(default_factory=list)
    tuned: TuneResult | None = None
    untuned_metrics: dict[str, Any] | None = None
    run_dir: Path | None = None
    errors: list[str] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        if self.tuned is not None:
            return self.tuned.best_value
        if self.untuned_metrics is not None:
            return float(self.untuned_metrics["valid"][METRIC])
        return None

    def exhausted(self, limit: int) -> bool:
        if self.tuned is None:
            return self.candidate.kind == "untuned" and self.untuned_metrics is not None
        return self.tuned.counts["complete"] + self.tuned.counts["pruned"] >= limit


class Search:
    """Runs a :class:`~recstack.auto.allocation.Plan` over the candidates; :meth:`run` returns their results."""

    def __init__(
        self,
        candidates: tuple[Candidate, ...],
        plan: Plan,
        split: PreparedSplit,
        out_dir: Path,
        limits: Limits,
        started: float,
    ) -> None:
        self.candidates = candidates
        self.plan = plan
        self.split = split
        self.out_dir = out_dir
        self.limits = limits
        self.started = started
        self.tallies = {c.name: _Tally(c) for c in candidates}

    def elapsed(self) -> float:
        return time.time() - self.started

    def run(self) -> list[CandidateResult]:
        for c in self.candidates:
            if c.kind == "untuned":
                self._run_once(c)
        for phase in self.plan.phases:
            if not phase.is_rung:
                names = list(self.plan.cheap)
            elif phase.name == "rung 0":
                names = list(self.plan.deep)
            else:
                scores = {n: self.tallies[n].score for n in names}
                exhausted = [n for n in names if self.tallies[n].exhausted(self.limits.deep_trials)]
                names = list(halve(scores, phase.keep, exhausted))
                log.info("%s: %s go on (validation so far: %s)", phase.name, names, _fmt_scores(scores))
            for i, name in enumerate(names):
                seconds = slice_now(phase.end_s, self.elapsed(), len(names) - i)
                self._run_study(self.tallies[name], phase.name, seconds)
        self._spend_leftover()
        return [self._result(t) for t in self.tallies.values()]

    def _spend_leftover(self) -> None:
        """Search time the rungs left unused (their survivors' studies reached the trial limit) goes on to the other
        deep candidates, best validation score first, each once (:func:`~recstack.auto.allocation.leftover_next`)."""
        already: list[str] = []
        deep = self.plan.deep
        while (left := self.plan.search_s - self.elapsed()) > 0:
            scores = {n: self.tallies[n].score for n in deep}
            exhausted = [n for n in deep if self.tallies[n].exhausted(self.limits.deep_trials)]
            name = leftover_next(scores, exhausted, already)
            if name is None or left < self.tallies[name].candidate.min_trial_s:
                return
            already.append(name)
            log.info("leftover: %s of search time unused by the rungs goes to %s", format_duration(round(left)), name)
            self._run_study(self.tallies[name], "leftover", left)

    def _run_once(self, c: Candidate) -> None:
        tally = self.tallies[c.name]
        run_dir = self.out_dir / "runs" / c.name
        cfg = copy.deepcopy(c.cfg)
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)
            cfg.evaluate_test = False
        start = time.time()
        tally.phases.append("once")
        try:
            result = train(cfg, self.split)
        except Exception as error:  # one candidate failing must not end the search
            log.exception("candidate %s failed", c.name)
            tally.errors.append(f"{type(error).__name__}: {error}")
        else:
            tally.untuned_metrics = result.metrics
            tally.run_dir = result.run_dir
        tally.seconds += time.time() - start

    def _run_study(self, tally: _Tally, phase: str, seconds: float) -> None:
        c = tally.candidate
        if seconds < c.min_trial_s:
            note = (
                f"{phase}: {seconds:.0f} s left, under its min_trial {format_duration(c.min_trial_s)}: not run "
                "(earlier candidates overran their share)"
            )
            log.warning("candidate %s: %s", c.name, note)
            tally.skips.append(note)
            return
        limit = self.limits.deep_trials if c.trainable else self.limits.cheap_trials
        cfg = copy.deepcopy(c.cfg)
        with open_dict(cfg):
            cfg.budget = float(seconds)
            cfg.trials = limit
            cfg.study_name = None
            cfg.storage = None
            cfg.study_root = str(self.out_dir / "studies")
            cfg.experiment_dir = str(self.out_dir / "experiment")
            cfg.test_winner = False  # the test split is read once, by the winner's refit
            if cfg.sampler.get("seed") is not None:
                # A resumed study with a sampler seeded as before would draw the same first values again.
                cfg.sampler.seed = int(cfg.sampler.seed) + len(tally.phases)
        log.info("%s: %s for %s (trial limit %d)", phase, c.name, format_duration(round(seconds)), limit)
        start = time.time()
        tally.phases.append(phase)
        tally.given_s += seconds
        try:
            if len(tally.phases) == 1:
                enqueue_defaults(cfg, self.split)
            tally.tuned = tune(cfg, split=self.split)
        except Exception as error:  # one candidate failing must not end the search
            log.exception("candidate %s failed in %s", c.name, phase)
            tally.errors.append(f"{phase}: {type(error).__name__}: {error}")
        tally.seconds += time.time() - start

    def _result(self, tally: _Tally) -> CandidateResult:
        c = tally.candidate
        note = "; ".join([*tally.errors, *tally.skips])
        base: dict[str, Any] = {
            "name": c.name,
            "kind": c.kind,
            "seconds": tally.seconds,
            "given_s": tally.given_s,
            "phases": tuple(tally.phases),
            "note": note,
        }
        if tally.untuned_metrics is not None:
            m = tally.untuned_metrics
            return CandidateResult(
                **base,
                status="done",
                valid_score=float(m["valid"][METRIC]),
                valid=dict(m["valid"]),
                best_trial=None,
                params={},
                run_dir=str(tally.run_dir),
                completed=1,
                pruned=0,
                failed=0,
                exhausted=True,
                epochs=m.get("epochs") if c.trainable else None,
                best_epoch=m.get("best_epoch") if c.trainable else None,
                best_epoch_is_last=bool(m.get("best_epoch_is_last", False)),
                trials_best_is_last=int(bool(m.get("best_epoch_is_last", False))),
                cut_by_budget=False,
                study_dir=None,
            )
        if tally.tuned is None:
            status = "failed" if tally.errors else "skipped"
            return CandidateResult(
                **base,
                status=status,
                valid_score=None,
                valid=None,
                best_trial=None,
                params={},
                run_dir=None,
                completed=0,
                pruned=0,
                failed=0,
                exhausted=False,
                epochs=None,
                best_epoch=None,
                best_epoch_is_last=False,
                trials_best_is_last=0,
                cut_by_budget=False,
                study_dir=None,
            )
        r = tally.tuned
        run_dir = trial_dir(r.study_dir, r.best_trial)
        metrics = runs.read_metrics(run_dir)
        study = optuna.load_study(study_name=r.study_name, storage=r.storage)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        limit = self.limits.deep_trials if c.trainable else self.limits.cheap_trials
        return CandidateResult(
            **base,
            status="done",
            valid_score=r.best_value,
            valid=dict(metrics["valid"]),
            best_trial=r.best_trial,
            params=dict(r.best_params),
            run_dir=str(run_dir),
            completed=r.counts["complete"],
            pruned=r.counts["pruned"],
            failed=r.counts["fail"],
            exhausted=tally.exhausted(limit),
            epochs=metrics.get("epochs") if c.trainable else None,
            best_epoch=metrics.get("best_epoch") if c.trainable else None,
            best_epoch_is_last=bool(metrics.get("best_epoch_is_last", False)),
            trials_best_is_last=sum(best_epoch_is_last(t) for t in done),
            cut_by_budget=bool(study.trials[r.best_trial].user_attrs.get("cut_by_budget")),
            study_dir=str(r.study_dir),
            experiment=str(r.experiment),
        )


def _within(param: space.Param, value: Any) -> bool:
    if param.type == "categorical":
        return value in param.choices
    return isinstance(value, int | float) and param.low <= value <= param.high  # type: ignore[operator]


def enqueue_defaults(cfg: DictConfig, split: PreparedSplit) -> bool:
    """Queue the model's default configuration (configs/model + configs/fit, as composed) as the first trial of the
    study ``cfg`` describes, so that a candidate whose time allows a single trial is judged by its tuned defaults
    rather than by a random draw. Opens the study as :func:`recstack.tuning.tune.tune` will (same name, storage and
    identity). Returns False, queuing nothing, when the study has trials already or a default lies outside the space."""
    params = space.parse_space(cfg.tune.space, cfg.model, cfg.get("fit"), source=f"configs/tune/{cfg.tune.model}.yaml")
    values = {p.key: OmegaConf.select(cfg, p.key) for p in params}
    outside = [p.key for p in params if not _within(p, values[p.key])]
    if outside:
        log.info(
            "%s: defaults %s lie outside the search space; the study starts with a sampled trial",
            cfg.tune.model,
            outside,
        )
        return False
    identity = study.StudyIdentity(split.dataset, str(cfg.tune.model), split.config_hash, space.space_hash(params))
    name = cfg.get("study_name") or identity.default_name()
    study_dir = Path(cfg.study_root) / name
    study_dir.mkdir(parents=True, exist_ok=True)
    storage = cfg.get("storage") or study.sqlite_url(study_dir / "study.db")
    the_study = study.open_study(name, storage, identity, instantiate(cfg.sampler), instantiate(cfg.pruner))
    if the_study.trials:
        return False
    the_study.enqueue_trial(values)
    return True


def _fmt_scores(scores: dict[str, float | None]) -> str:
    return ", ".join(f"{n} {s:.4f}" if s is not None else f"{n} none" for n, s in scores.items())
