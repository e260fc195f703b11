"""A benchmark-only callback: wall time of every epoch's training loop and of its validation, written by rank 0.

``benchmarks/ddp_ml100k.py`` adds it to ``recstack-train`` with ``+callbacks.epoch_clock._target_=epoch_clock.EpochClock
+callbacks.epoch_clock.path=<file.json>`` (``benchmarks/`` on ``PYTHONPATH``). metrics.json's ``seconds_per_epoch``
divides the whole ``trainer.fit`` by the epochs, so under DDP it also counts rank 1's start-up (imports, data, model);
these figures do not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


class EpochClock(Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.epochs: list[dict[str, float]] = []
        self._start = self._validation_start = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._start = self._validation_start = time.perf_counter()

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._validation_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # Lightning runs the epoch's validation inside the training epoch, before this hook.
        end = time.perf_counter()
        self.epochs.append(
            {"train_s": self._validation_start - self._start, "validation_s": end - self._validation_start}
        )

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"world_size": trainer.world_size, "epochs": self.epochs}))
