"""Run folders: where a training run writes its config, checkpoints, logs and metrics, and how to load one back.

``outputs/runs/<model>-<dataset>-<YYYYmmdd-HHMMSS>/`` (or ``run_dir=``)::

    config.yaml            the resolved config, plus ``prepared_split``: the folder of the split it trained on
    checkpoints/best.ckpt  best validation NDCG@10 (Lightning checkpoint; ``last.ckpt``; ``interrupted.ckpt`` on Ctrl-C)
    csv/  tensorboard/     logs
    metrics.json           {"valid": {...}, "test": {...}, "train_seconds", "epochs", "seconds_per_epoch", "best_epoch",
                           "best_epoch_is_last" (true: still improving when it stopped; max_epochs is too low)};
                           a refit (recstack.training.refit): valid and test null, "refit": {"epochs", "from_run", ...}

Baselines (models without ``loss``) write the same folder without checkpoints: they are deterministic, so
:func:`load_run` refits them on the training split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.ckpt"
MODEL_PREFIX = "model."  # the RecommenderModule attribute that holds the network
# Run folders written before configs/fit/ existed kept these training settings inside the `model` config.
_LEGACY_FIT_KEYS = (
    "lr",
    "weight_decay",
    "batch_size",
    "negatives",
    "sampling",
    "sampling_alpha",
    "max_epochs",
    "patience",
    "text_side_input",
)


@dataclass(frozen=True)
class LoadedRun:
    name: str
    run_dir: Path
    model: Recommender
    split: PreparedSplit
    config: DictConfig


def default_run_dir(model_name: str, dataset: str, root: str | Path = "outputs/runs", suffix: str = "") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{model_name}-{dataset}-{stamp}{suffix}"


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())


def model_state_from_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The network's ``state_dict`` out of a Lightning checkpoint of :class:`RecommenderModule`."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]
    return {k.removeprefix(MODEL_PREFIX): v for k, v in state.items() if k.startswith(MODEL_PREFIX)}


def load_split(cfg: DictConfig) -> PreparedSplit:
    """The split a run trained on: its recorded folder when still there, else prepared again from the config; for a
    refit run, the union of its stages (:func:`recstack.training.refit.refit_split`)."""
    from recstack.training.refit import is_refit, refit_split

    root = cfg.get("prepared_split")
    if root and (Path(root) / "manifest.json").is_file():
        split = PreparedSplit.load(root)
    else:
        from recstack.config import prepare_from_config

        split = prepare_from_config(cfg, progress=False)
    return refit_split(split) if is_refit(cfg) else split


def model_config(cfg: DictConfig) -> tuple[DictConfig, bool]:
    """A run config's model constructor config and its ``fit.text_side_input`` (older run folders load too)."""
    model = cfg.model.copy()
    legacy = {key: model.pop(key) for key in _LEGACY_FIT_KEYS if key in model}
    fit = cfg.get("fit") or {}
    return model, bool(fit.get("text_side_input", legacy.get("text_side_input", False)))


def load_run(
    run_dir: str | Path,
    *,
    checkpoint: str = BEST_CHECKPOINT,
    device: str = "cpu",
    split: PreparedSplit | None = None,
) -> LoadedRun:
    """Rebuild a run's model (best checkpoint by default; baselines refit) and its split, in eval mode.

    ``split``: the split the run trained on, already in memory (the caller vouches for it), instead of reading it back."""
    from recstack.training.build import build_model

    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a recstack run folder (no {CONFIG_FILE}); pass outputs/runs/<run>")
    cfg = OmegaConf.load(config_path)
    assert isinstance(cfg, DictConfig)
    if split is None:
        split = load_split(cfg)
    model_cfg, text_side_input = model_config(cfg)
    model = build_model(
        model_cfg,
        split,
        text_side_input=text_side_input,
        text_cache_dir=cfg.get("text_cache_dir", "data/cache/text"),
        progress=False,
    )
    if isinstance(model, torch.nn.Module) and hasattr(model, "loss"):
        ckpt = run_dir / CHECKPOINT_DIR / checkpoint
        if not ckpt.is_file():
            raise FileNotFoundError(f"{ckpt} not found; the run may have been stopped before its first validation")
        model.load_state_dict(model_state_from_checkpoint(ckpt))
        model.to(device).eval()
    else:
        model.fit(split)  # type: ignore[attr-defined]
    return LoadedRun(name=run_dir.name, run_dir=run_dir, model=model, split=split, config=cfg)
