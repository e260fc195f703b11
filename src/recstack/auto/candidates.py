"""The candidate models of ``recstack-auto``: which names are known, and each one's composed configuration.

A candidate is a model with a search space (``configs/tune/<name>.yaml``: tuned by a ``recstack-tune`` study) or one
listed in ``untuned`` (nothing to search: popularity; trained once with ``configs/model/<name>.yaml``). Each
candidate's configuration is ``configs/tune.yaml`` (``configs/train.yaml`` for an untuned one) composed with
``model=<name>``, then given the ``recstack-auto`` settings every candidate shares (:data:`SHARED_KEYS`: the data, the
split, the trainer, the seed ...) and finally ``per_model.<name>`` merged on top (``+per_model.mf.fit.max_epochs=200``).
Every name, space and override is checked here, before any data is read.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from recstack.config import compose, config_dir
from recstack.tuning import space
from recstack.tuning.budget import parse_duration

# configs/auto.yaml keys that every candidate's train / tune config takes over (the same meaning as in train.yaml).
SHARED_KEYS = (
    "data",
    "split",
    "trainer",
    "seed",
    "ks",
    "processed_root",
    "text_cache_dir",
    "torch_threads",
    "progress",
    "n_jobs",
)
Kind = Literal["untuned", "cheap", "deep", "two_stage"]  # two_stage: a pipeline of two candidates (.two_stage)


@dataclass(frozen=True)
class Candidate:
    """One model in the running, with the configuration its studies (or its one run) start from."""

    name: str
    cfg: DictConfig  # composed configs/tune.yaml (configs/train.yaml when untuned), shared keys and per_model applied
    tuned: bool
    trainable: bool  # trained by gradient descent (MF, LightGCN) rather than fitted in closed form
    min_trial_s: float  # configs/tune/<name>.yaml min_trial; 0 when untuned

    @property
    def kind(self) -> Kind:
        if not self.tuned:
            return "untuned"
        return "deep" if self.trainable else "cheap"


def known_candidates(untuned: Sequence[str]) -> tuple[str, ...]:
    """Every model with a search space in ``configs/tune/``, and the ``untuned`` ones that have a model config."""
    tuned = sorted(p.stem for p in (config_dir() / "tune").glob("*.yaml"))
    extra = sorted(n for n in untuned if n not in tuned and (config_dir() / "model" / f"{n}.yaml").is_file())
    return (*tuned, *extra)


def check_models(models: Sequence[str], untuned: Sequence[str]) -> tuple[str, ...]:
    """``models`` as a tuple, or a ValueError naming the unknown ones and the known candidates."""
    models = tuple(str(m) for m in models)
    known = known_candidates(untuned)
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ValueError(
            f"unknown candidate model(s) {unknown} in models={list(models)}; known: {', '.join(known)} (a model with "
            "a search space configs/tune/<name>.yaml, or one listed in untuned=)"
        )
    if not models:
        raise ValueError(f"models=[] names no candidate; choose from: {', '.join(known)}")
    if len(set(models)) != len(models):
        raise ValueError(f"models={list(models)} names a model twice")
    return models


def _compose(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose from Python, also inside the running ``recstack-auto`` Hydra app (Hydra is then initialised already,
    on the same config tree)."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        from hydra import compose as hydra_compose

        return hydra_compose(config_name=config_name, overrides=list(overrides))
    return compose(config_name, overrides)


def build_candidate(name: str, cfg: DictConfig, untuned: Sequence[str]) -> Candidate:
    """The :class:`Candidate` ``name`` for the composed ``configs/auto.yaml`` ``cfg`` (see the module docstring)."""
    tuned = name not in untuned
    composed = _compose("tune" if tuned else "train", [f"model={name}"])
    with open_dict(composed):
        for key in SHARED_KEYS:
            if key in cfg and key in composed:  # n_jobs: studies only
                composed[key] = copy.deepcopy(cfg[key])
        if not tuned:
            composed.logger = {}  # a single run: metrics.json is its record, as for tuning trials
    extra = (cfg.get("per_model") or {}).get(name)
    if extra:
        try:
            composed = OmegaConf.merge(composed, extra)  # type: ignore[assignment]
        except OmegaConfBaseException as error:
            key = getattr(error, "full_key", None) or str(error).splitlines()[0]
            raise ValueError(
                f"per_model.{name}: {key} is not a setting of {name}'s configuration (configs/tune.yaml composed with "
                f"model={name}: model.*, fit.*, tune.*, trainer.* ...); {str(error).splitlines()[0]}"
            ) from None
    assert isinstance(composed, DictConfig)
    trainable = space.is_trainable(composed.model)
    min_trial = 0.0
    if tuned:
        source = f"configs/tune/{name}.yaml"
        space.parse_space(composed.tune.space, composed.model, composed.get("fit"), source=source)
        min_trial = parse_duration(composed.tune.min_trial, name=f"{source} min_trial")
    return Candidate(name=name, cfg=composed, tuned=tuned, trainable=trainable, min_trial_s=min_trial)


def build_candidates(cfg: DictConfig) -> tuple[Candidate, ...]:
    """Every candidate of ``cfg.models``, untuned first, then the cheap, then the deep ones (each group in the order
    given): the order the budget is spent in."""
    untuned = tuple(str(n) for n in cfg.get("untuned") or ())
    models = check_models(cfg.models, untuned)
    stray = sorted(set(cfg.get("per_model") or {}) - set(models))
    if stray:
        raise ValueError(f"per_model names {stray}, which are not among models={list(models)}")
    built = [build_candidate(name, cfg, untuned) for name in models]
    order = {"untuned": 0, "cheap": 1, "deep": 2}
    return tuple(sorted(built, key=lambda c: order[c.kind]))  # stable: the given order within a kind
