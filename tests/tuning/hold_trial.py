"""A test-only callback that holds a trial in the middle, for tests/tuning/test_resume.py: at the start of epoch
``epoch`` (every hook of the epochs before it has run, their checkpoints are written) it writes ``marker`` and blocks,
so the test kills the study's process mid-trial at a known point rather than racing epochs of a fraction of a second.
Added with ``+callbacks.hold._target_=hold_trial.HoldTrial +callbacks.hold.marker=<file>`` (this folder on
``PYTHONPATH``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


class HoldTrial(Callback):
    def __init__(self, marker: str, epoch: int = 1) -> None:
        self.marker, self.epoch = Path(marker), epoch

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch == self.epoch:
            self.marker.write_text(f"epoch {self.epoch} started\n")
            time.sleep(3600)  # until the test kills the process
