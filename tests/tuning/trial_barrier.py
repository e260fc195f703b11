"""A test-only callback that holds each trial at the start of training until ``parties`` processes have started one,
for tests/tuning/test_budget.py::test_parallel_trials_share_one_study.

On the small synthetic split a trial takes well under a second, less than the skew between two tuning processes'
start-up on a loaded machine, so the first process up could finish every trial before the second asks for one. Each
process leaves a file named by its pid in ``folder``; a trial waits until ``parties`` distinct pids are there (what the
processes report, not a fixed sleep). Added with ``+callbacks.barrier._target_=trial_barrier.TrialBarrier
+callbacks.barrier.folder=<folder>`` (this folder on ``sys.path``: the tuning processes are spawned with the test's).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


class TrialBarrier(Callback):
    def __init__(self, folder: str, parties: int = 2, timeout: float = 300.0) -> None:
        self.folder, self.parties, self.timeout = Path(folder), parties, timeout

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / str(os.getpid())).touch()
        deadline = time.monotonic() + self.timeout  # bounds a broken run only
        while len(list(self.folder.iterdir())) < self.parties:
            if time.monotonic() > deadline:
                raise RuntimeError(f"trial_barrier: fewer than {self.parties} processes started a trial")
            time.sleep(0.05)
