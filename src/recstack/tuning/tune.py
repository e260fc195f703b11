"""``tune(cfg)``: an Optuna study over one model's search space, validation only, within a wall-clock budget.

``cfg`` is ``configs/tune.yaml`` composed: the whole ``recstack-train`` config (data, split, model, fit, trainer ...)
plus ``tune`` (the space, ``configs/tune/<model>.yaml``) and the study's settings. Each trial copies it, sets the
searched keys, and trains with ``evaluate_test=false`` in ``<study_root>/<study_name>/trials/trial-<n>/``. Afterwards
the best trial's saved best checkpoint is scored on test once, its configuration is written as an experiment file, and
``report.html`` is written beside the study's SQLite database.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from recstack.data.prepared import PreparedSplit
from recstack.tuning import outputs, space, study
from recstack.tuning.budget import format_duration, parse_duration
from recstack.tuning.objective import Objective
from recstack.tuning.report import write_report

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3  # a space or setup that fails every trial stops the study instead of burning the budget


@dataclass(frozen=True)
class TuneSettings:
    """The study's settings, typed (``configs/tune.yaml``)."""

    model: str
    budget_s: float
    min_trial_s: float
    trials: int
    n_jobs: int
    study_name: str | None
    study_root: Path
    storage: str | None
    experiment_dir: Path
    test_winner: bool

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TuneSettings:
        if "tune" not in cfg or "space" not in cfg.tune:
            raise ValueError("no search space: compose configs/tune.yaml (it reads configs/tune/<model>.yaml)")
        trials = int(cfg.trials)
        n_jobs = int(cfg.n_jobs)
        if trials < 1:
            raise ValueError(f"trials={trials}: must be at least 1")
        if n_jobs < 1:
            raise ValueError(f"n_jobs={n_jobs}: must be at least 1")
        from recstack.config import config_dir

        return cls(
            model=str(cfg.tune.model),
            budget_s=parse_duration(cfg.budget),
            min_trial_s=parse_duration(cfg.tune.min_trial, name=f"configs/tune/{cfg.tune.model}.yaml min_trial"),
            trials=trials,
            n_jobs=n_jobs,
            study_name=cfg.get("study_name") or None,
            study_root=Path(cfg.study_root),
            storage=cfg.get("storage") or None,
            experiment_dir=Path(cfg.experiment_dir) if cfg.get("experiment_dir") else config_dir() / "experiment",
            test_winner=bool(cfg.get("test_winner", True)),
        )


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    study_dir: Path
    storage: str
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    winner: outputs.Winner | None
    experiment: Path
    report: Path
    counts: dict[str, int]  # completed / pruned / failed trials in the study (all sessions)
    seconds: float


def _choices(model: str) -> dict[str, str]:
    """The data / split / model group choices under Hydra (the experiment file overrides them); outside a Hydra app
    (tests, notebooks) only the model is known."""
    found: dict[str, str] = {}
    if HydraConfig.initialized():
        runtime = HydraConfig.get().runtime.choices
        found = {g: str(runtime[g]) for g in ("data", "split") if runtime.get(g)}
        if runtime.get("model") and str(runtime["model"]) != model:
            raise ValueError(
                f"model={runtime['model']} but the search space is for {model} (tune={model}); pass the same"
            )
    return {**found, "model": model}


def check_budget(settings: TuneSettings) -> None:
    if settings.budget_s < settings.min_trial_s:
        minimum = format_duration(settings.min_trial_s)
        raise ValueError(
            f"budget={format_duration(settings.budget_s)} is too small for even one {settings.model} trial: the minimum "
            f"is {minimum} (configs/tune/{settings.model}.yaml min_trial); pass budget={minimum} or more"
        )


def tune(cfg: DictConfig, split: PreparedSplit | None = None) -> TuneResult:
    """Run (or resume) the study ``cfg`` describes; see the module docstring. Bad settings, an unknown search
    parameter, a budget below one trial and a storage of another study are refused before any data is read or trial
    run."""
    started = time.time()
    settings = TuneSettings.from_config(cfg)
    choices = _choices(settings.model)
    source = f"configs/tune/{settings.model}.yaml"
    params = space.parse_space(cfg.tune.space, cfg.model, cfg.get("fit"), source=source)
    check_budget(settings)
    if split is None:
        from recstack.config import prepare_from_config

        split = prepare_from_config(cfg, progress=cfg.get("progress", True))
    identity = study.StudyIdentity(split.dataset, settings.model, split.config_hash, space.space_hash(params))
    name = settings.study_name or identity.default_name()
    study_dir = settings.study_root / name
    study_dir.mkdir(parents=True, exist_ok=True)
    storage = settings.storage or study.sqlite_url(study_dir / "study.db")
    the_study = study.open_study(name, storage, identity, instantiate(cfg.sampler), instantiate(cfg.pruner))
    the_study.sampler = instantiate(_resumed(cfg.sampler, len(the_study.trials)))
    study.recover_interrupted(the_study)
    deadline = started + settings.budget_s
    before = study.finished(the_study)
    log.info(
        "study %s (%s): %d trial(s) done before, up to %d, budget %s",
        name,
        storage,
        before,
        settings.trials,
        format_duration(settings.budget_s),
    )
    objective = Objective(cfg, split, params, identity, name, study_dir, deadline)
    n_jobs = min(settings.n_jobs, os.cpu_count() or 1)
    if n_jobs != settings.n_jobs:
        log.warning("n_jobs=%d > %d cores: running %d trial(s) at a time", settings.n_jobs, n_jobs, n_jobs)
    if n_jobs == 1:
        optimize(the_study, objective, settings.trials, deadline)
    else:
        _optimize_in_processes(cfg, split, settings, name, storage, study_dir, identity, deadline, n_jobs)
        the_study = optuna.load_study(study_name=name, storage=storage)
    return _finish(the_study, cfg, settings, choices, params, study_dir, storage, started)


def optimize(the_study: optuna.Study, objective: Objective, trials: int, deadline: float) -> None:
    """Run trials one at a time until the study holds ``trials`` finished ones or the deadline passes (checked between
    trials; the running one is stopped at its next epoch by :class:`~recstack.tuning.callbacks.Deadline`)."""
    failures = 0
    ran: list[FrozenTrial] = []  # this process's trials (under n_jobs > 1 other processes finish trials too)
    while study.finished(the_study) < trials and time.time() < deadline:
        the_study.optimize(
            objective, n_trials=1, catch=(Exception,), gc_after_trial=True, callbacks=[lambda _, t: ran.append(t)]
        )
        last = ran[-1]
        failures = failures + 1 if last.state == TrialState.FAIL else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            raise RuntimeError(
                f"{failures} trials in a row failed (the last, trial {last.number}, with {last.params}); see the log "
                "above for the error: fix the space or the config before spending the budget"
            )


def _worker(
    container: dict,
    split_root: str,
    settings: TuneSettings,
    name: str,
    storage: str,
    study_dir: str,
    identity: study.StudyIdentity,
    deadline: float,
    index: int,
) -> None:
    cfg = OmegaConf.create(container)
    assert isinstance(cfg, DictConfig)
    params = space.parse_space(cfg.tune.space, cfg.model, cfg.get("fit"), source=settings.model)
    sampler_cfg = cfg.sampler.copy()
    if sampler_cfg.get("seed") is not None:  # one seed per process, or they would all draw the same values
        sampler_cfg.seed = int(sampler_cfg.seed) + index
    the_study = optuna.load_study(
        study_name=name, storage=storage, sampler=instantiate(sampler_cfg), pruner=instantiate(cfg.pruner)
    )
    the_study.sampler = instantiate(_resumed(sampler_cfg, len(the_study.trials)))
    objective = Objective(cfg, PreparedSplit.load(split_root), params, identity, name, Path(study_dir), deadline)
    optimize(the_study, objective, settings.trials, deadline)


def _resumed(sampler_cfg: DictConfig, n_trials: int) -> DictConfig:
    """The sampler's config for a study that already holds ``n_trials``: its seed moved on by that many, or a resumed
    study would draw its first session's values again (a seeded sampler restarts its random stream; the trials it
    would repeat are already in the study). Still deterministic: the same study state gives the same draws."""
    if not n_trials or sampler_cfg.get("seed") is None:
        return sampler_cfg
    moved = sampler_cfg.copy()
    moved.seed = int(sampler_cfg.seed) + 1009 * n_trials
    return moved


def _optimize_in_processes(
    cfg: DictConfig,
    split: PreparedSplit,
    settings: TuneSettings,
    name: str,
    storage: str,
    study_dir: Path,
    identity: study.StudyIdentity,
    deadline: float,
    n_jobs: int,
) -> None:
    """``n_jobs`` processes share the study through its storage, each running trials until the limit or the deadline
    (processes, not threads: a trial seeds the process-wide RNGs and sets torch's thread count). Up to ``n_jobs - 1``
    trials beyond the limit may finish, since each process checks the count before starting one."""
    container = OmegaConf.to_container(cfg, resolve=False)
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(
            target=_worker,
            args=(container, str(split.root), settings, name, storage, str(study_dir), identity, deadline, index),
        )
        for index in range(n_jobs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n_jobs} tuning processes failed (exit codes {bad}); see the log above")


def _finish(
    the_study: optuna.Study,
    cfg: DictConfig,
    settings: TuneSettings,
    choices: dict[str, str],
    params: tuple[space.Param, ...],
    study_dir: Path,
    storage: str,
    started: float,
) -> TuneResult:
    trials = the_study.get_trials(deepcopy=False)
    counts = {
        s.name.lower(): sum(t.state == s for t in trials)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    if counts["complete"] == 0:
        raise RuntimeError(
            f"no trial of study {the_study.study_name} completed ({counts['pruned']} pruned, {counts['fail']} failed) "
            f"within budget={format_duration(settings.budget_s)}: raise the budget or trials="
        )
    best = the_study.best_trial
    run_dir = Path(best.user_attrs["run_dir"])
    ks = tuple(int(k) for k in cfg.ks)
    winner = (
        outputs.test_winner(study_dir, best.number, run_dir, dict(best.params), ks) if settings.test_winner else None
    )
    data_name = choices.get("data") or re.sub(r"[^a-z0-9]+", "_", str(the_study.user_attrs["dataset"]).lower()).strip(
        "_"
    )
    header = [
        f"Tuned by recstack-tune on the validation split only: study {the_study.study_name}, trial {best.number} of "
        f"{len(trials)}, valid ndcg@10 {best.value:.4f}.",
        f"Dataset {the_study.user_attrs['dataset']}, prepared split {the_study.user_attrs['split_hash']}; seed and every "
        "model / training setting of that trial below.",
    ]
    if winner is not None:
        header.append(f"Test (read once, for this trial only): ndcg@10 {winner.test['ndcg@10']:.4f}.")
    exp_name = outputs.experiment_name(data_name, settings.model)
    header.append(f"recstack-train experiment={exp_name}")
    experiment = outputs.write_experiment(
        settings.experiment_dir,
        exp_name,
        run_dir,
        choices=choices,
        trainable=space.is_trainable(cfg.model),
        header=header,
    )
    seconds = time.time() - started
    facts = {
        "dataset": the_study.user_attrs["dataset"],
        "split": the_study.user_attrs["split_hash"],
        "model": settings.model,
        "budget": format_duration(settings.budget_s),
        "trial limit": settings.trials,
        "this session": f"{seconds:.0f} s",
    }
    report = write_report(the_study, study_dir, keys=[p.key for p in params], winner=winner, facts=facts)
    return TuneResult(
        study_name=the_study.study_name,
        study_dir=study_dir,
        storage=storage,
        best_trial=best.number,
        best_value=float(best.value),
        best_params=dict(best.params),
        winner=winner,
        experiment=experiment,
        report=report,
        counts=counts,
        seconds=seconds,
    )


def summary(result: TuneResult) -> str:
    """The lines ``recstack-tune`` prints."""
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
    lines = [
        f"study {result.study_name}: {result.counts['complete']} completed, {result.counts['pruned']} pruned, "
        f"{result.counts['fail']} failed trials ({result.seconds:.0f} s this session)",
        f"  best: trial {result.best_trial}, valid ndcg@10 {result.best_value:.4f}: {params}",
    ]
    if result.winner is not None:
        t = result.winner.test
        lines.append(
            f"  test (read once): ndcg@10 {t['ndcg@10']:.4f}  recall@10 {t['recall@10']:.4f}  map@10 {t['map@10']:.4f}"
        )
    lines += [f"  experiment: {result.experiment}", f"  report: {result.report}", f"  storage: {result.storage}"]
    return "\n".join(lines)
