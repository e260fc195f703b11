"""A test-only callback that records what each DDP rank did, for tests/training/test_ddp.py.

Added to a real ``recstack-train`` run with ``+callbacks.rank_record._target_=rank_record.RankRecord
+callbacks.rank_record.out_dir=<folder>`` (this folder on ``PYTHONPATH``). Every rank keeps
``<out_dir>/rank<global rank>.json`` up to date after every optimiser step, every epoch and at the end of ``fit`` (so a
rank that dies or is left alone mid-run has recorded all it finished): the (user, item) pairs of every training batch
it saw, by epoch; a hash of the model's parameters once training starts (after a checkpoint is restored) and after
every optimiser step (with its epoch); the validation NDCG@10 it logged and its stop decision after each epoch. The
folder lies outside the run folder, so that the run folder holds what the run itself wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


def parameter_hash(module: Any) -> str:
    """sha256 over every parameter's bytes, in name order: equal hashes mean bit-identical weights."""
    digest = hashlib.sha256()
    for name, param in sorted(module.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class RankRecord(Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.pairs: dict[int, list[list[int]]] = {}
        self.start_hash: str | None = None
        self.step_hashes: list[list[Any]] = []  # [epoch, hash] per step
        self.epochs: list[dict[str, Any]] = []

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.start_hash = parameter_hash(pl_module)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        pairs = self.pairs.setdefault(trainer.current_epoch, [])
        pairs.extend([int(u), int(i)] for u, i in zip(batch.users.tolist(), batch.items.tolist()))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # After the optimiser step (automatic optimisation).
        self.step_hashes.append([trainer.current_epoch, parameter_hash(pl_module)])
        self._write(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        ndcg = trainer.callback_metrics.get("val/ndcg@10")
        self.epochs.append(
            {
                "epoch": trainer.current_epoch,
                "val_ndcg@10": None if ndcg is None else float(ndcg),
                "should_stop": bool(trainer.should_stop),
            }
        )
        self._write(trainer)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer)

    def _write(self, trainer: Any) -> None:
        record = {
            "global_rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "pairs": {str(epoch): pairs for epoch, pairs in self.pairs.items()},
            "start_hash": self.start_hash,
            "step_hashes": self.step_hashes,
            "epochs": self.epochs,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(record))
        os.replace(partial, path)  # whole records only, even for a process killed mid-write
