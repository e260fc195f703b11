"""Refit for deployment (recstack.training.refit): the same config trained on every interaction of its split for the
epoch count its validation run chose, no validation; loaded back and exported like any run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.training.refit import epochs_from_run, is_refit, refit_split
from recstack.training.runs import load_run, read_metrics


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory, tiny_split_writer: Callable[..., Path]) -> PreparedSplit:
    return PreparedSplit.load(tiny_split_writer(tmp_path_factory.mktemp("split") / "tiny"))


def overrides(root: Path, name: str, *extra: str) -> list[str]:
    return [
        "model=mf",
        "fit.max_epochs=3",
        "logger=none",
        "progress=false",
        f"run_dir={root / name}",
        f"text_cache_dir={root / 'text-cache'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, split: PreparedSplit) -> dict[str, Path]:
    from recstack.training.train import train

    root = tmp_path_factory.mktemp("runs")
    validated = train(compose("train", overrides(root, "validated")), split=split).run_dir
    refit = train(compose("train", overrides(root, "refit", f"refit.from_run={validated}")), split=split).run_dir
    return {"validated": validated, "refit": refit}


def test_refit_split_holds_every_interaction_grouped_by_user(split: PreparedSplit) -> None:
    union = refit_split(split)
    assert len(union.train) == len(split.train) + len(split.valid) + len(split.test)
    assert np.all(np.diff(union.train["user_idx"].to_numpy()) >= 0)
    expected = (split.matrix("train") + split.matrix("valid") + split.matrix("test")).astype(bool)
    assert (union.matrix("train").astype(bool) != expected).nnz == 0
    assert union.config_hash == "tiny0000-refit" and split.config_hash == "tiny0000"  # the input is left as it was
    assert union.item_popularity.sum() == len(union.train) and refit_split(union) is union


@pytest.mark.slow
def test_refit_trains_the_chosen_epochs_on_everything_without_validation(
    runs: dict[str, Path], split: PreparedSplit
) -> None:
    chosen = epochs_from_run(runs["validated"])
    assert chosen == read_metrics(runs["validated"])["best_epoch"] + 1
    metrics = read_metrics(runs["refit"])
    assert metrics["valid"] is None and metrics["test"] is None and metrics["epochs"] == chosen
    assert metrics["refit"] == {"epochs": chosen, "from_run": str(runs["validated"]), "interactions": 300}
    assert metrics["best_epoch"] == chosen - 1 and metrics["best_epoch_is_last"] is False
    checkpoints = sorted(p.name for p in (runs["refit"] / "checkpoints").iterdir())
    assert checkpoints == ["best.ckpt", "last.ckpt"]
    config = OmegaConf.load(runs["refit"] / "config.yaml")
    assert is_refit(config) and config.refit.epochs == chosen and config.trainer.limit_val_batches == 0
    assert "early_stopping" not in config.callbacks  # nothing to monitor

    loaded = load_run(runs["refit"])  # rebuilt on the union, as it trained
    assert loaded.split.config_hash == "tiny0000-refit" and len(loaded.split.train) == 300
    assert not np.allclose(
        loaded.model.user_embeddings().detach().numpy(),
        load_run(runs["validated"]).model.user_embeddings().detach().numpy(),
    )


@pytest.mark.slow
def test_refit_exports_seen_lists_of_everything(runs: dict[str, Path], split: PreparedSplit, tmp_path: Path) -> None:
    from recstack.bundle.reader import Bundle
    from recstack.export.exporter import export_run
    from recstack.retrieval.index import IndexConfig

    bundle = Bundle.load(export_run(runs["refit"], tmp_path / "b", index_config=IndexConfig(kind="flat"), text=False))
    assert bundle.manifest.split_hash == "tiny0000-refit" and bundle.seen.nnz == 300
    assert bundle.manifest.metrics["retrieval"]["refit"]["epochs"] == epochs_from_run(runs["validated"])
    assert int(bundle.items["popularity"].sum()) == 300  # popularity over everything, too


def test_refit_settings_are_checked(tmp_path: Path) -> None:
    from recstack.training.refit import refit_epochs

    assert refit_epochs(compose("train")) is None and refit_epochs(compose("train", ["refit.epochs=4"])) == 4
    with pytest.raises(ValueError, match="give one of them"):
        refit_epochs(compose("train", ["refit.epochs=4", f"refit.from_run={tmp_path}"]))
    with pytest.raises(ValueError, match="at least one epoch"):
        refit_epochs(compose("train", ["refit.epochs=0"]))
    with pytest.raises(FileNotFoundError, match=r"no metrics\.json"):
        refit_epochs(compose("train", [f"refit.from_run={tmp_path}"]))
