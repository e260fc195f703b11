"""A training run whose best validation epoch is its last one warns that max_epochs is too low and says so in its
metrics.json (``best_epoch_is_last``); one stopped early, and a baseline, do not."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.training.train import train


def run(tmp_path: Path, split: PreparedSplit, name: str, *overrides: str) -> dict:
    cfg = compose(
        "train", [f"run_dir={tmp_path / name}", "logger=none", "progress=false", "torch_threads=1", *overrides]
    )
    result = train(cfg, split)
    written = json.loads((result.run_dir / "metrics.json").read_text())
    assert written["best_epoch_is_last"] == result.metrics["best_epoch_is_last"]
    return written


def test_best_epoch_at_the_cap_is_flagged_and_warned(
    tiny_split: PreparedSplit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="recstack.training.train"):
        capped = run(tmp_path, tiny_split, "capped", "model=mf", "fit.max_epochs=1")
    assert (capped["epochs"], capped["best_epoch"], capped["best_epoch_is_last"]) == (1, 0, True)
    assert any("max_epochs=1" in r.message and "raise fit.max_epochs" in r.message for r in caplog.records)


def test_early_stopping_and_baselines_are_not_flagged(
    tiny_split: PreparedSplit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A learning rate far too high: validation stops improving at once, and early stopping (patience 1) ends the run.
    with caplog.at_level(logging.WARNING, logger="recstack.training.train"):
        stopped = run(tmp_path, tiny_split, "stopped", "model=mf", "fit.max_epochs=20", "fit.patience=1", "fit.lr=1.0")
        baseline = run(tmp_path, tiny_split, "pop", "model=pop")
    assert stopped["epochs"] < 20 and stopped["best_epoch"] < stopped["epochs"] - 1
    assert stopped["best_epoch_is_last"] is False and baseline["best_epoch_is_last"] is False
    assert not [r for r in caplog.records if "max_epochs" in r.message]
