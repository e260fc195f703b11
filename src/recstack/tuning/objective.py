"""One trial: the searched values applied to the composed config, one validation-only training run in its own folder.

Each trial's run folder (``<study>/trials/trial-<n>/``) is a normal recstack run folder plus ``tuning.json``: the study
name, trial number, seed, the prepared split's hash and the searched values, so any run can be traced back and redone
(``recstack-train`` with its ``config.yaml``'s values, or the study's experiment file).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, open_dict

from recstack.data.prepared import PreparedSplit
from recstack.training.train import train
from recstack.tuning import space
from recstack.tuning.callbacks import trial_callbacks
from recstack.tuning.study import INTERRUPTED, StudyIdentity

log = logging.getLogger(__name__)

TRIAL_FILE = "tuning.json"
METRIC = "ndcg@10"


@dataclass(frozen=True)
class TrialRecord:
    """``tuning.json`` of a trial's run folder."""

    study_name: str
    trial_number: int
    seed: int
    dataset: str
    model: str
    split_hash: str
    params: dict[str, Any]


def trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / "trials" / f"trial-{number:04d}"


def trial_config(cfg: DictConfig, values: dict[str, Any], run_dir: Path) -> DictConfig:
    """The train config of one trial: ``cfg`` with the searched values, its own run folder, and never the test split."""
    trial_cfg = copy.deepcopy(cfg)
    with open_dict(trial_cfg):
        space.apply(trial_cfg, values)
        trial_cfg.run_dir = str(run_dir)
        trial_cfg.evaluate_test = False
    return trial_cfg


def read_record(run_dir: str | Path) -> TrialRecord:
    return TrialRecord(**json.loads((Path(run_dir) / TRIAL_FILE).read_text()))


class Objective:
    """Optuna's objective: validation NDCG@10 of the trial's run (the best epoch's, for trained models)."""

    def __init__(
        self,
        cfg: DictConfig,
        split: PreparedSplit,
        params: tuple[space.Param, ...],
        identity: StudyIdentity,
        study_name: str,
        study_dir: Path,
        deadline: float,
    ) -> None:
        self.cfg = cfg
        self.split = split
        self.params = params
        self.identity = identity
        self.study_name = study_name
        self.study_dir = study_dir
        self.deadline = deadline

    def __call__(self, trial: optuna.Trial) -> float:
        values = {p.key: p.suggest(trial) for p in self.params}
        run_dir = trial_dir(self.study_dir, trial.number)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("run_dir", str(run_dir))
        record = TrialRecord(
            study_name=self.study_name,
            trial_number=trial.number,
            seed=int(self.cfg.seed),
            dataset=self.identity.dataset,
            model=self.identity.model,
            split_hash=self.identity.split_hash,
            params=values,
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / TRIAL_FILE).write_text(json.dumps(asdict(record), indent=2) + "\n")
        pruning, deadline = trial_callbacks(trial, self.deadline)
        try:
            result = train(trial_config(self.cfg, values, run_dir), self.split, extra_callbacks=[pruning, deadline])
        except (KeyboardInterrupt, SystemExit):
            trial.set_user_attr(INTERRUPTED, True)  # a resumed study queues it again
            raise
        metrics = result.metrics
        if metrics["test"] is not None:  # guards the rule the whole design rests on
            raise RuntimeError(f"trial {trial.number} read the test split; tuning must not")
        for key in ("epochs", "best_epoch", "train_seconds"):
            trial.set_user_attr(key, metrics.get(key))
        trial.set_user_attr("valid", metrics["valid"])
        trial.set_user_attr("cut_by_budget", deadline.stopped)
        return float(metrics["valid"][METRIC])
