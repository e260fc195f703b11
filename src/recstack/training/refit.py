"""Refit for deployment: the same model trained on every interaction of its split, for the epoch count validation
chose.

A validation run (``recstack-train``) trains on the training split, picks its best epoch on validation and reads the
test split once. The bundle a service deploys should know everything each user did, so it is refit: the same config,
trained on train + valid + test (:func:`refit_split`) for a fixed number of epochs (``refit.epochs=N``, or
``refit.from_run=<validation run>``: its best epoch + 1, :func:`epochs_from_run`), with no validation, early stopping
or test reading (there is no held-out data left to read). Its final weights are ``checkpoints/best.ckpt``, so
:func:`recstack.training.runs.load_run` and ``recstack-export`` read it like any run; its ``config.yaml`` records
``refit.epochs``, so the split is rebuilt as the union whenever the run is loaded.

The epoch count is kept as validation chose it, although the union has more interactions per epoch (1/0.8 = 1.25x
for the default 0.8/0.1/0.1 split): the common practice, and the only count the data has vouched for.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from recstack.config import config_dir
from recstack.data.prepared import PreparedSplit

REFIT_SUFFIX = "-refit"
CALLBACKS_FILE = Path("callbacks") / "refit.yaml"


def refit_split(split: PreparedSplit) -> PreparedSplit:
    """``split`` with every interaction in its training stage (rows grouped by ``user_idx`` ascending, as the layout
    has them; valid and test kept as they were, so they are inside train now and are no hold-out).

    Its ``config_hash`` gains ``-refit``: a bundle exported from it is refused by evaluators that check the split it
    came from (it has seen the test split), and a ranker run must be a refit of the same split too."""
    if split.config_hash.endswith(REFIT_SUFFIX):
        return split
    union = pd.concat([split.train, split.valid, split.test], ignore_index=True)
    order = np.argsort(union["user_idx"].to_numpy(), kind="stable")
    manifest = {**split.manifest, "config_hash": split.config_hash + REFIT_SUFFIX, "refit": True}
    return PreparedSplit(
        root=split.root,
        manifest=manifest,
        train=union.iloc[order].reset_index(drop=True),
        valid=split.valid,
        test=split.test,
        items=split.items,
        users=split.users,
    )


def epochs_from_run(run_dir: str | Path) -> int:
    """The epoch count a validation run chose: its best epoch + 1 (``metrics.json``: ``best_epoch`` is 0-based); a run
    without a best checkpoint (``callbacks=none``) ran ``epochs``."""
    from recstack.training.runs import read_metrics

    try:
        metrics = read_metrics(run_dir)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"refit.from_run={run_dir}: no metrics.json there; give a finished recstack-train run, or refit.epochs=N"
        ) from None
    best = metrics.get("best_epoch")
    epochs = int(best) + 1 if best is not None else int(metrics.get("epochs") or 0)
    if epochs < 1:
        raise ValueError(f"refit.from_run={run_dir}: its metrics.json names no epoch count ({metrics!r})")
    return epochs


def refit_epochs(cfg: DictConfig) -> int | None:
    """The epoch count of a refit ``cfg`` asks for (``refit.epochs``, else ``refit.from_run``'s), None for an ordinary
    run. Both set: refused, since one would silently win."""
    node = cfg.get("refit") or {}
    epochs, from_run = node.get("epochs"), node.get("from_run")
    if epochs is not None and from_run is not None:
        raise ValueError(f"refit.epochs={epochs} and refit.from_run={from_run}: give one of them")
    if from_run is not None:
        return epochs_from_run(from_run)
    if epochs is None:
        return None
    if int(epochs) < 1:
        raise ValueError(f"refit.epochs={epochs}: a refit trains at least one epoch")
    return int(epochs)


def is_refit(cfg: DictConfig) -> bool:
    """Whether a (run) config is a refit: its split is the union of the prepared split's stages."""
    node = cfg.get("refit") or {}
    return node.get("epochs") is not None or node.get("from_run") is not None


def refit_config(cfg: DictConfig, epochs: int) -> DictConfig:
    """A copy of ``cfg`` that trains ``epochs`` epochs with no validation (``trainer.limit_val_batches=0``), keeps the
    final weights as ``best.ckpt`` (``configs/callbacks/refit.yaml`` replaces the configured callbacks: nothing is left
    to monitor) and reads no test split; ``refit.epochs`` records the count (``from_run`` stays for the record)."""
    cfg = copy.deepcopy(cfg)
    callbacks = OmegaConf.load(config_dir() / CALLBACKS_FILE)
    with open_dict(cfg):
        if cfg.get("refit") is None:
            cfg.refit = {"epochs": None, "from_run": None}
        cfg.refit.epochs = int(epochs)
        cfg.trainer.max_epochs = int(epochs)
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.num_sanity_val_steps = 0
        cfg.callbacks = callbacks
        cfg.evaluate_test = False
    return cfg


def refit_record(cfg: DictConfig, split: PreparedSplit) -> dict[str, object]:
    """``metrics.json``'s ``refit`` entry of a refit run: the epoch count, the run it came from, the interactions."""
    return {"epochs": int(cfg.refit.epochs), "from_run": cfg.refit.get("from_run"), "interactions": len(split.train)}
