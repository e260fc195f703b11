"""A test-only callback that kills one DDP rank the hard way (SIGKILL: no Python cleanup, as the kernel's OOM killer
would) at a given training batch, for the dead-rank part of tests/training/test_ddp.py's LightGCN test."""

from __future__ import annotations

import os
import signal
from typing import Any

from lightning.pytorch.callbacks import Callback


class KillRank(Callback):
    def __init__(self, rank: int, epoch: int = 1, batch: int = 1) -> None:
        self.rank, self.epoch, self.batch = rank, epoch, batch

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
