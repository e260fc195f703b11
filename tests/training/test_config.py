"""The config tree composes, and every model / trainer / callbacks / logger / optimizer / experiment instantiates."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import open_dict

from recstack.config import compose, config_dir
from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender
from recstack.training.build import build_model


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def test_default_config_composes() -> None:
    cfg = compose("train")
    assert cfg.model._target_ == "recstack.models.mf.MatrixFactorization"
    assert cfg.trainer.accelerator == "auto"
    assert cfg.callbacks.model_checkpoint.monitor == "val/ndcg@10"
    assert cfg.optimizer._partial_ is True


@pytest.mark.parametrize("model", choices("model"))
def test_every_model_instantiates(model: str, tiny_split: PreparedSplit, text_cache: Path) -> None:
    cfg = compose("train", [f"model={model}"])
    built = build_model(cfg.model, tiny_split, text_cache_dir=text_cache, progress=False)
    assert isinstance(built, Recommender)
    assert (built.n_users, built.n_items) == (tiny_split.n_users, tiny_split.n_items)


@pytest.mark.parametrize("model", choices("model"))
def test_model_config_holds_constructor_arguments_only(model: str) -> None:
    """``instantiate(cfg.model, <data-derived inputs>)`` builds the model: training settings live in ``cfg.fit``."""
    cfg = compose("train", [f"model={model}"])
    params = inspect.signature(get_class(cfg.model._target_)).parameters
    assert set(cfg.model) - {"_target_"} <= set(params), sorted(set(cfg.model) - set(params))
    assert not set(cfg.fit) & set(params)


def test_instantiate_builds_a_model_from_its_config_alone() -> None:
    cfg = compose("train", ["model=mf", "model.embedding_dim=8"])
    model = instantiate(cfg.model, n_users=5, n_items=7)
    assert isinstance(model, Recommender) and model.item_embeddings().shape == (7, 8)


def test_the_model_choice_picks_its_fit_settings_and_baselines_fall_back() -> None:
    assert compose("train", ["model=lightgcn"]).fit.max_epochs == 100  # configs/fit/lightgcn.yaml
    assert compose("train", ["model=mf"]).fit.max_epochs == 60  # configs/fit/mf.yaml
    assert compose("train", ["model=pop"]).fit.max_epochs == 100  # train.yaml's fit: block
    assert compose("train", ["model=mf", "fit=lightgcn"]).fit.lr == 0.01


def test_model_hyperparameters_reach_the_constructor_and_fit_settings_the_training(tiny_split: PreparedSplit) -> None:
    overrides = ["model=lightgcn", "model.num_layers=2", "fit.lr=0.003", "fit.batch_size=512", "fit.max_epochs=7"]
    overrides += ["fit.patience=4", "fit.negatives=3", "fit.sampling=popularity", "fit.sampling_alpha=0.5"]
    cfg = compose("train", overrides)
    built = build_model(cfg.model, tiny_split, progress=False)
    assert len(built.gcn.convs) == 2
    assert cfg.optimizer.lr == 0.003 and cfg.datamodule.batch_size == 512 and cfg.trainer.max_epochs == 7
    assert cfg.callbacks.early_stopping.patience == 4
    assert (cfg.datamodule.negatives, cfg.datamodule.sampling, cfg.datamodule.alpha) == (3, "popularity", 0.5)


@pytest.mark.parametrize("trainer", choices("trainer"))
def test_every_trainer_composes(trainer: str, tmp_path: Path) -> None:
    cfg = compose("train", [f"trainer={trainer}", f"run_dir={tmp_path}"])
    assert get_class(cfg.trainer._target_).__name__ == "Trainer"
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip(f"trainer={trainer} needs a CUDA GPU to instantiate; composing it was checked")
    built = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert built.max_epochs == cfg.trainer.max_epochs


def test_callbacks_loggers_and_optimizer_instantiate(tmp_path: Path) -> None:
    cfg = compose("train", [f"run_dir={tmp_path}", "fit.lr=0.02"])
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert {type(c).__name__ for c in callbacks} == {"ModelCheckpoint", "EarlyStopping", "OnExceptionCheckpoint"}
    loggers = [instantiate(c) for c in cfg.logger.values()]
    assert {type(lg).__name__ for lg in loggers} == {"CSVLogger", "TensorBoardLogger"}
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 0.02


@pytest.mark.parametrize("experiment", choices("experiment"))
def test_every_experiment_composes(experiment: str) -> None:
    cfg = compose("train", [f"experiment={experiment}"])
    with open_dict(cfg):
        cfg.run_dir = "unused"
    assert cfg.model._target_.startswith("recstack.models.")
    assert set(cfg.model) - {"_target_"} <= set(inspect.signature(get_class(cfg.model._target_)).parameters)


def test_experiments_set_model_and_fit_apart() -> None:
    bpr = compose("train", ["experiment=mf_bpr"])
    assert (bpr.model.loss, bpr.fit.max_epochs, bpr.trainer.max_epochs) == ("bpr", 40, 40)
    text = compose("train", ["experiment=lightgcn_text"])
    assert text.model._target_ == "recstack.models.lightgcn.LightGCN" and text.fit.text_side_input is True
