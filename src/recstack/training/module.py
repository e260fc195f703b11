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

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, InteractionBatch):  # frozen dataclass: moved by its own method
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: InteractionBatch, batch_idx: int) -> torch.Tensor:
        loss = self.model.loss(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch))
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
        metrics = self.evaluate(stage)
        self.last_metrics[stage] = metrics
        for name, value in metrics.items():
            self.log(f"{prefix}/{name}", value, prog_bar=name == "ndcg@10", batch_size=1)

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
