"""The one LightningModule that trains any recommender with a ``loss(batch)``, validated by the shared evaluator."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import torch

from recstack.data.prepared import PreparedSplit, Stage
from recstack.models.base import Recommender
from recstack.models.batches import InteractionBatch

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


class RecommenderModule(L.LightningModule):
    """Training step = ``model.loss(batch)``; validation / test = full-ranking evaluation of ``split`` at epoch end,
    logged as ``val/<metric>@k`` and ``test/<metric>@k`` (checkpointing and early stopping monitor ``val/ndcg@10``).

    ``optimizer`` is a partial (Hydra ``_partial_: true``) that receives the model's parameters.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: OptimizerFactory,
        split: PreparedSplit,
        ks: Sequence[int] = (10, 20),
    ) -> None:
        super().__init__()
        if not (isinstance(model, Recommender) and hasattr(model, "loss")):
            raise TypeError(
                f"{type(model).__name__} cannot be trained by gradient descent: it needs to be an nn.Module Recommender "
                "with a loss(batch) method (baselines are fit(split) instead)"
            )
        self.model = model
        self.optimizer_factory = optimizer
        self.split = split
        self.ks = tuple(ks)
        self.last_metrics: dict[str, dict[str, float]] = {}
        # DDP broadcasts a module's buffers from rank 0 when it wraps it and before every forward. A recstack model's
        # buffers are constants built from the split (LightGCN's graph, feature tables, text vectors), the same on
        # every rank by construction: DDP skips them (a sparse CSR adjacency cannot be broadcast at all). Running
        # statistics of normalisation layers, which training changes, would still be synced.
        self._ddp_params_and_buffers_to_ignore = [
            f"model.{prefix}{'.' if prefix else ''}{name}"
            for prefix, sub in model.named_modules()
            if not isinstance(sub, torch.nn.modules.batchnorm._NormBase)
            for name, _ in sub.named_buffers(recurse=False)
        ]

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, InteractionBatch):  # frozen dataclass: moved by its own method
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: InteractionBatch, batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(batch)
        # sync_dist: under DDP the logged loss is the mean over ranks (one process: nothing to sync).
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch), sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Nothing per batch: see :meth:`on_validation_epoch_end`."""

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Nothing per batch: see :meth:`on_test_epoch_end`."""

    def evaluate(self, stage: Stage) -> dict[str, float]:
        from recstack.evaluation.evaluator import evaluate

        return {
            k: float(v) for k, v in evaluate(self.model, self.split, stage, self.ks, device=self.device).metrics.items()
        }

    def _evaluate_and_log(self, stage: Stage, prefix: str) -> None:
        # Under DDP every rank holds the same weights: rank 0 evaluates and the others take its figures, so that all
        # ranks log the same values and take the same checkpoint and early-stopping decisions (one process: the
        # broadcast returns its argument).
        mine = self.evaluate(stage) if self.trainer.is_global_zero else None
        metrics: dict[str, float] = self.trainer.strategy.broadcast(mine, src=0)
        self.last_metrics[stage] = metrics
        for name, value in metrics.items():
            # The same value on every rank, so sync_dist's mean leaves it as it is; Lightning warns per metric without it.
            self.log(f"{prefix}/{name}", value, prog_bar=name == "ndcg@10", batch_size=1, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._evaluate_and_log("valid", "val")

    def on_train_epoch_end(self) -> None:
        # One line per epoch: what a run reports with the progress bar off (CI, sweeps, log files). The epoch's
        # checkpoints are written just after this hook (ModelCheckpoint saves in its own on_train_epoch_end).
        ndcg = self.last_metrics.get("valid", {}).get("ndcg@10")
        log.info("epoch %d done%s", self.current_epoch, "" if ndcg is None else f", val/ndcg@10 {ndcg:.4f}")

    def on_test_epoch_end(self) -> None:
        self._evaluate_and_log("test", "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.model.parameters())
