"""Building a model from its config and a split: the data-derived constructor inputs are supplied here.

``cfg.model`` is a ``_target_`` config of the model class with its constructor arguments and nothing else
(``instantiate(cfg.model, n_users=..., n_items=...)`` builds it); how it is trained is ``cfg.fit``
(``configs/fit/<model>.yaml``). Besides its hyper-parameters a model's constructor may ask, by argument name, for
inputs that come from the data rather than the config:

* ``n_users``, ``n_items``: always given;
* ``train_matrix``: the training user x item CSR matrix (LightGCN's graph; with the text side-input, MF and LightGCN
  start the id rows of items without training interactions at zero);
* ``features``: :class:`~recstack.models.features.WideDeepFeatures` of the split and its item text vectors;
* ``item_text_vectors``: the BERT item vectors, only with ``text_side_input=True`` (``fit.text_side_input``; MF,
  LightGCN);
* ``text_cache_dir``: where item text vectors are cached (``cfg.text_cache_dir``), for models that encode the item
  table themselves in ``fit(split)`` (the content model reads ``split.items``, so it needs no data input here).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender


def item_text_vectors(split: PreparedSplit, cache_dir: str | Path, progress: bool = True) -> np.ndarray:
    from recstack.models.text_encoder import encode_items

    return encode_items(split.items.sort_values("item_idx"), cache_dir=cache_dir, progress=progress)


def build_model(
    model_cfg: DictConfig,
    split: PreparedSplit,
    *,
    text_side_input: bool = False,
    text_cache_dir: str | Path = "data/cache/text",
    progress: bool = True,
) -> Recommender:
    """Instantiate ``model_cfg`` for ``split`` (see the module docstring for what is supplied from the data)."""
    cfg = OmegaConf.to_container(model_cfg, resolve=True)
    assert isinstance(cfg, dict)
    if "_target_" not in cfg:
        raise ValueError(f"model config has no _target_ (keys: {sorted(cfg)}); pick one with model=<name>")
    params = inspect.signature(get_class(cfg["_target_"])).parameters
    kwargs: dict[str, object] = {"n_users": split.n_users, "n_items": split.n_items}
    if "train_matrix" in params:
        kwargs["train_matrix"] = split.matrix("train")
    if "text_cache_dir" in params:
        kwargs["text_cache_dir"] = text_cache_dir
    if "features" in params:
        from recstack.models.features import WideDeepFeatures

        kwargs["features"] = WideDeepFeatures.from_split(split, item_text_vectors(split, text_cache_dir, progress))
    if text_side_input:
        if "item_text_vectors" not in params:
            raise ValueError(f"{cfg['_target_']} takes no item_text_vectors; set fit.text_side_input=false")
        kwargs["item_text_vectors"] = torch.from_numpy(item_text_vectors(split, text_cache_dir, progress))
    # Data objects go to the partial's call, not through instantiate, which would turn dataclasses into configs.
    model = instantiate(cfg, _partial_=True, _convert_="all")(**kwargs)
    if not isinstance(model, Recommender):
        raise TypeError(f"{cfg['_target_']} is not a recstack Recommender")
    return model
