"""What a study leaves behind besides its database: the winner's test metrics (read once) and the experiment file."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recstack.training import runs

log = logging.getLogger(__name__)

WINNER_FILE = "winner.json"


@dataclass(frozen=True)
class Winner:
    """The best trial and its one reading of the test split."""

    trial_number: int
    run_dir: str
    params: dict[str, Any]
    valid: dict[str, float]
    test: dict[str, float]


def test_winner(
    study_dir: Path, trial_number: int, run_dir: Path, params: dict[str, Any], ks: tuple[int, ...]
) -> Winner:
    """Evaluate the best trial's saved best checkpoint on the test split (a closed-form model is refitted: it is
    deterministic) and write ``winner.json``. A study resumed without a new best reuses the earlier reading, so test is
    read once per winner."""
    path = study_dir / WINNER_FILE
    if path.is_file():
        earlier = Winner(**json.loads(path.read_text()))
        if earlier.trial_number == trial_number:
            return earlier
    from recstack.evaluation.evaluator import evaluate

    loaded = runs.load_run(run_dir)
    test = {k: float(v) for k, v in evaluate(loaded.model, loaded.split, "test", ks).metrics.items()}
    valid = runs.read_metrics(run_dir)["valid"]
    winner = Winner(trial_number=trial_number, run_dir=str(run_dir), params=params, valid=valid, test=test)
    path.write_text(json.dumps(asdict(winner), indent=2) + "\n")
    return winner


def experiment_name(data_name: str, model_name: str) -> str:
    return f"{data_name}_{model_name}_tuned"


def write_experiment(
    out_dir: Path,
    name: str,
    run_dir: Path,
    *,
    choices: dict[str, str],
    trainable: bool,
    header: list[str],
) -> Path:
    """``<out_dir>/<name>.yaml``: the winning trial's whole model and training settings as a Hydra experiment, so
    ``recstack-train experiment=<name>`` trains it again. ``choices`` (``data``, ``split``, ``model``) become the
    experiment's group overrides (those known); ``header`` lines go first, as comments."""
    resolved = OmegaConf.load(run_dir / runs.CONFIG_FILE)
    assert isinstance(resolved, DictConfig)
    body: dict[str, Any] = {"seed": int(resolved.seed)}
    model = OmegaConf.to_container(resolved.model, resolve=True)
    assert isinstance(model, dict)
    model.pop("_target_", None)
    body["model"] = model
    if trainable:
        body["fit"] = OmegaConf.to_container(resolved.fit, resolve=True)
    defaults = [{f"override /{group}": value} for group, value in choices.items() if value]
    lines = ["# @package _global_", *(f"# {line}" for line in header)]
    text = "\n".join(lines) + "\n" + OmegaConf.to_yaml(OmegaConf.create({"defaults": defaults, **body}))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.yaml"
    path.write_text(text)
    return path
