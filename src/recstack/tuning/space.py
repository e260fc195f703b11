"""Search spaces (``configs/tune/<model>.yaml``): typed parameters, checked against the model before any trial.

A space maps config keys to distributions::

    model.l2: {type: float, low: 10.0, high: 5000.0, log: true}       # a constructor argument of the model
    fit.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}       # a training setting (configs/fit/<model>.yaml)
    fit.negatives: {type: int, low: 4, high: 64, log: true}
    model.loss: {type: categorical, choices: [bpr, softmax]}

``model.<arg>`` must be a constructor argument of the model's class (not one the data supplies: ``n_users``, ...);
``fit.<key>`` a key of the composed ``fit`` node, and only for models trained by gradient descent (a closed-form
model such as EASE has no training settings).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import optuna
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

# Constructor arguments that come from the data (recstack.training.build), never from a search space.
DATA_ARGS = frozenset({"n_users", "n_items", "train_matrix", "features", "item_text_vectors", "text_cache_dir"})
ParamType = Literal["float", "int", "categorical"]
_FIELDS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}


@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution."""

    key: str  # "model.l2", "fit.lr"
    type: ParamType
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)  # type: ignore[arg-type]
        if self.type == "int":
            step = int(self.step) if self.step is not None else 1
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=step)  # type: ignore[arg-type]
        return trial.suggest_categorical(self.key, list(self.choices))


def model_args(model_cfg: DictConfig) -> list[str]:
    """The model class's constructor arguments a space may search (those the data supplies left out)."""
    cls = get_class(str(model_cfg._target_))
    params = inspect.signature(cls).parameters
    return sorted(name for name, p in params.items() if name not in DATA_ARGS and p.kind is not p.VAR_KEYWORD)


def is_trainable(model_cfg: DictConfig) -> bool:
    """Trained by gradient descent (a ``loss``), as opposed to fitted in closed form (``fit(split)``)."""
    return hasattr(get_class(str(model_cfg._target_)), "loss")


def accepted_keys(model_cfg: DictConfig, fit_cfg: DictConfig | None) -> list[str]:
    keys = [f"model.{a}" for a in model_args(model_cfg)]
    if is_trainable(model_cfg) and fit_cfg is not None:
        keys += [f"fit.{k}" for k in fit_cfg]
    return keys


def parse_space(
    raw: Mapping[str, Any], model_cfg: DictConfig, fit_cfg: DictConfig | None, *, source: str
) -> tuple[Param, ...]:
    """Typed parameters of ``raw`` (a space's ``space:`` node), or a ValueError naming the bad key and the accepted
    ones. ``source`` names the file in messages (``configs/tune/mf.yaml``)."""
    if not raw:
        raise ValueError(f"{source}: the search space is empty; declare at least one key, e.g. model.<arg>: {{...}}")
    accepted = accepted_keys(model_cfg, fit_cfg)
    target = str(model_cfg._target_)
    params = []
    for key, spec in raw.items():
        key = str(key)
        if key not in accepted:
            if key.startswith("fit.") and not is_trainable(model_cfg):
                why = f"{target} is fitted in closed form: it has no training settings (fit.*)"
            else:
                why = f"it is not a constructor argument of {target} (model.*) nor a training setting (fit.*)"
            raise ValueError(f"{source}: unknown search parameter {key!r}: {why}; accepted: {accepted}")
        params.append(_param(key, spec, source))
    return tuple(params)


def _param(key: str, spec: Any, source: str) -> Param:
    where = f"{source}: {key}"
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    if not isinstance(spec, Mapping) or spec.get("type") not in _FIELDS:
        raise ValueError(f"{where}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
    kind = spec["type"]
    extra = set(spec) - _FIELDS[kind] - {"type"}
    if extra:
        raise ValueError(
            f"{where}: unknown field(s) {sorted(extra)} for type {kind}; accepted: {sorted(_FIELDS[kind])}"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list | tuple) or not choices:
            raise ValueError(f"{where}: categorical needs a non-empty list `choices`")
        return Param(key=key, type="categorical", choices=tuple(choices))
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: {kind} needs numeric `low` and `high`, got {spec!r}") from None
    log = bool(spec.get("log", False))
    step = spec.get("step")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{where}: needs low < high, got low={low:g} high={high:g}")
    if log and low <= 0:
        raise ValueError(f"{where}: log scale needs low > 0, got {low:g}")
    if log and step is not None:
        raise ValueError(f"{where}: `step` and `log: true` cannot be combined (Optuna's rule)")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ValueError(f"{where}: int needs whole `low` and `high`, got {low:g}, {high:g}")
    return Param(key=key, type=kind, low=low, high=high, log=log, step=None if step is None else float(step))


def space_hash(params: tuple[Param, ...]) -> str:
    """A short hash of the space: a resumed study must search the same one."""
    text = json.dumps([asdict(p) for p in params], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def apply(cfg: DictConfig, values: Mapping[str, Any]) -> None:
    """Set each searched key (``fit.lr``) in ``cfg`` in place; interpolations that read it (``${fit.lr}``) follow."""
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
