"""Trainer callbacks of tuning runs only: the study's wall-clock deadline and pruning of bad trials."""

from __future__ import annotations

import time
from typing import Any

import optuna
from lightning.pytorch.callbacks import Callback
from optuna_integration import PyTorchLightningPruningCallback

MONITOR = "val/ndcg@10"  # what the trials report each epoch, checkpoint and stop early on


class Deadline(Callback):
    """Stops training after the epoch in progress once ``deadline`` (``time.time()``) has passed; the run then ends
    as with early stopping (best weights restored, validation metrics written), so the budget bounds the study's wall
    clock rather than only when the last trial may start."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.stopped = False

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if time.time() >= self.deadline and not trainer.sanity_checking:
            trainer.should_stop = True
            self.stopped = True


def trial_callbacks(trial: optuna.Trial, deadline: float) -> tuple[Callback, Deadline]:
    """Optuna's Lightning pruning callback on ``val/ndcg@10`` (it reports every epoch and raises ``TrialPruned`` when
    the pruner says so) and the deadline."""
    return PyTorchLightningPruningCallback(trial, monitor=MONITOR), Deadline(deadline)
