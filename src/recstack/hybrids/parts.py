"""The parts of a hybrid: which base models exist, building them for a split, and normalising their scores per user.

A part is named like its model config, ``configs/model/<name>.yaml`` (``pop``, ``itemknn``, ``ease``, ``mf``,
``lightgcn``, ...; ``content`` as soon as its config exists); :func:`known_parts` lists them, hybrids excluded.
A part is obtained in one of three ways:

* models without a training loop (``fit(split)``: popularity, KNN, EASE) are fitted on the training split;
* a trainable model with a run folder in ``runs`` (``{"lightgcn": "outputs/runs/lightgcn-..."}``) is rebuilt from the
  run's config and its best checkpoint, after checking the run trained on this very split;
* a trainable model without one is trained here by :func:`recstack.training.train.train` with its default config
  (``evaluate_test=false``: early stopping on validation, the test split never read), into ``runs_root``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from omegaconf import DictConfig, OmegaConf

from recstack.config import compose, config_dir
from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender
from recstack.training import runs
from recstack.training.build import build_model

log = logging.getLogger(__name__)

Normalisation = Literal["zscore", "minmax"]
HYBRID_PREFIX = "hybrid_"
DEFAULT_RUNS_ROOT = "outputs/hybrid_parts"


def known_parts() -> tuple[str, ...]:
    """Names a hybrid may use as parts: every ``configs/model/<name>.yaml`` that is not itself a hybrid."""
    return tuple(
        sorted(p.stem for p in (config_dir() / "model").glob("*.yaml") if not p.stem.startswith(HYBRID_PREFIX))
    )


def check_part_names(names: Iterable[str], what: str = "parts") -> tuple[str, ...]:
    """``names`` as a tuple, or a ``ValueError`` naming the unknown ones and listing the known base models."""
    names = tuple(str(n) for n in names)
    known = known_parts()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown base model(s) {unknown} in the hybrid's {what}; known base models: {', '.join(known)} "
            "(each is a configs/model/<name>.yaml)"
        )
    if not names:
        raise ValueError(f"the hybrid's {what} is empty; name base models from: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"the hybrid's {what} {list(names)} name a base model twice")
    return names


def model_config(name: str) -> DictConfig:
    """The constructor config of base model ``name`` (``configs/model/<name>.yaml``)."""
    check_part_names([name])
    cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
    assert isinstance(cfg, DictConfig)
    return cfg


def is_trainable(model: Recommender) -> bool:
    """Deep models (a ``loss``) are trained by recstack.training; the others are fitted with ``fit(split)``."""
    return isinstance(model, torch.nn.Module) and hasattr(model, "loss")


def build_part(
    name: str,
    split: PreparedSplit,
    *,
    run_dir: str | Path | None = None,
    runs_root: str | Path = DEFAULT_RUNS_ROOT,
    train_overrides: Sequence[str] = (),
) -> Recommender:
    """Base model ``name`` for ``split``, trained on its training split only (see the module docstring)."""
    if run_dir is not None:
        return load_part(name, split, run_dir)
    model = build_model(model_config(name), split, progress=False)
    if not is_trainable(model):
        return model.fit(split)  # type: ignore[attr-defined, no-any-return]
    from recstack.training.train import train

    out = runs.default_run_dir(name, split.dataset, runs_root)
    log.info("training part %s in-process into %s (no run folder given for it)", name, out)
    overrides = [f"model={name}", f"run_dir={out}", "evaluate_test=false", "progress=false", *train_overrides]
    return train(_compose_train(overrides), split=split).model


def _compose_train(overrides: Sequence[str]) -> DictConfig:
    """``configs/train.yaml`` with ``overrides``, also from inside a running Hydra app (``recstack-train
    model=hybrid_*``), where Hydra is already initialised on the same config tree."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        from hydra import compose as hydra_compose

        return hydra_compose(config_name="train", overrides=list(overrides))
    return compose("train", overrides)


def load_part(name: str, split: PreparedSplit, run_dir: str | Path) -> Recommender:
    """Base model ``name`` rebuilt from a run folder's config and best checkpoint; refuses a run of another model
    or of another split."""
    run_dir = Path(run_dir)
    path = run_dir / runs.CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"runs.{name}={run_dir} is not a recstack run folder (no {runs.CONFIG_FILE})")
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    expected = model_config(name)._target_
    if cfg.model._target_ != expected:
        raise ValueError(f"runs.{name}={run_dir} trained {cfg.model._target_}, not {expected} (configs/model/{name})")
    ran_on = _split_hash(cfg.get("prepared_split"))
    if ran_on != split.config_hash:
        raise ValueError(
            f"runs.{name}={run_dir} trained on split {ran_on}, not on this one ({split!r}); train it on this split "
            "or leave it out of runs to train it here"
        )
    model_cfg, text_side_input = runs.model_config(cfg)
    model = build_model(model_cfg, split, text_side_input=text_side_input, progress=False)
    if not is_trainable(model):
        return model.fit(split)  # type: ignore[attr-defined, no-any-return]
    ckpt = run_dir / runs.CHECKPOINT_DIR / runs.BEST_CHECKPOINT
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} not found: runs.{name} must point at a finished run with a best checkpoint")
    model.load_state_dict(runs.model_state_from_checkpoint(ckpt))
    return model.eval()  # type: ignore[attr-defined, no-any-return]


def _split_hash(prepared: str | None) -> str | None:
    """The config hash of a run's recorded split folder (its manifest, else the folder's name)."""
    if not prepared:
        return None
    manifest = Path(prepared) / "manifest.json"
    if manifest.is_file():
        import json

        return str(json.loads(manifest.read_text())["config_hash"])
    return Path(prepared).name


def build_parts(
    names: Sequence[str],
    split: PreparedSplit,
    *,
    runs: Mapping[str, str] | None = None,
    runs_root: str | Path = DEFAULT_RUNS_ROOT,
    train_overrides: Sequence[str] = (),
) -> dict[str, Recommender]:
    """Every part of ``names`` for ``split`` (see :func:`build_part`); ``runs`` maps trainable parts to run folders."""
    names = check_part_names(names)
    runs = dict(runs or {})
    stray = sorted(set(runs) - set(names))
    if stray:
        raise ValueError(f"runs names {stray}, which are not among the hybrid's parts {list(names)}")
    return {
        n: build_part(n, split, run_dir=runs.get(n), runs_root=runs_root, train_overrides=train_overrides)
        for n in names
    }


def seen_mask(train: sp.csr_matrix, users: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean ``(len(users), n_items)``: the items each user trained on."""
    rows = train[users]
    mask = torch.zeros(rows.shape, dtype=torch.bool)
    r = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    mask[torch.from_numpy(r), torch.from_numpy(rows.indices.astype(np.int64))] = True
    return mask.to(device)


def normalise(scores: torch.Tensor, seen: torch.Tensor, how: Normalisation = "zscore") -> torch.Tensor:
    """Per-user normalised scores, statistics taken over the items each user has not seen (the ones that can be
    recommended); seen items get 0. ``zscore``: ``(s - mean) / std``; ``minmax``: ``(s - min) / (max - min)``."""
    s = scores.float()
    unseen = ~seen
    count = unseen.sum(dim=1, keepdim=True).clamp(min=1)
    if how == "zscore":
        mean = torch.where(unseen, s, 0.0).sum(dim=1, keepdim=True) / count
        var = torch.where(unseen, (s - mean) ** 2, 0.0).sum(dim=1, keepdim=True) / count
        out = (s - mean) / var.sqrt().clamp(min=1e-12)
    elif how == "minmax":
        low = torch.where(unseen, s, math.inf).amin(dim=1, keepdim=True)
        high = torch.where(unseen, s, -math.inf).amax(dim=1, keepdim=True)
        out = (s - low) / (high - low).clamp(min=1e-12)
    else:
        raise ValueError(f"normalise={how!r}; choose 'zscore' or 'minmax'")
    return out.masked_fill(seen, 0.0)


def check_two_parts(roles: Mapping[str, str], hybrid: str) -> list[str]:
    """The names of a two-part hybrid (role -> name, e.g. ``{"cold": "pop", "warm": "ease"}``), each known and the two
    different; returned in the roles' order."""
    for role, name in roles.items():
        check_part_names([name], f"{role} part")
    (role_a, a), (role_b, b) = roles.items()
    if a == b:
        raise ValueError(f"{role_a} and {role_b} are both {a!r}: a {hybrid} needs two different parts")
    return [a, b]


PART_KEYS: tuple[str, ...] = ("parts", "cold", "warm", "retrieval", "ranker")
"""The keys of a hybrid's config that name base models (configs/model/hybrid_*.yaml)."""


def check_config_parts(model_cfg: Mapping[str, object]) -> None:
    """Before any data is read: every base model a hybrid's config names (:data:`PART_KEYS`) exists, else the
    ``ValueError`` of :func:`check_part_names` listing the known ones. Configs of other models pass untouched."""
    if not str(model_cfg.get("_target_", "")).startswith("recstack.hybrids."):
        return
    for key in PART_KEYS:
        value = model_cfg.get(key)
        if value is not None:
            check_part_names([value] if isinstance(value, str) else list(value), f"model.{key}")  # type: ignore[arg-type]


def known_items(model: Recommender, split: PreparedSplit) -> torch.Tensor:
    """Boolean ``(n_items,)``: the items ``model`` can score: every item for a model that scores untrained items
    (``Recommender.scores_untrained_items``, e.g. content), else the items with a training interaction."""
    if model.scores_untrained_items:
        return torch.ones(split.n_items, dtype=torch.bool)
    return torch.from_numpy(np.asarray(split.item_popularity) > 0)


def part_scores(
    parts: Mapping[str, Recommender], users: torch.Tensor, seen: torch.Tensor, how: Normalisation = "zscore"
) -> dict[str, torch.Tensor]:
    """Each part's normalised ``(len(users), n_items)`` scores (see :func:`normalise`), on CPU."""
    with torch.no_grad():
        return {n: normalise(m.score_all(users).detach().float().cpu(), seen, how) for n, m in parts.items()}
