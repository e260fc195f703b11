"""A test-only callback whose ``on_exception`` hook blocks, like a shutdown stuck on a full disk or a DDP barrier.

tests/training/test_interrupt.py adds it to a real ``recstack-train`` process with
``+callbacks.slow_shutdown._target_=slow_shutdown.SlowShutdown`` (this folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import Callback

STARTED = "slow_shutdown: on_exception started"


class SlowShutdown(Callback):
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        print(STARTED, flush=True)
        time.sleep(3600)
