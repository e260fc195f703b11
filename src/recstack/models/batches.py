"""The one batch type every trainable model reads: positives with their context, and sampled negatives.

A plain type of the models layer: ``recstack.training`` builds these batches (its DataModule), the models only read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class InteractionBatch:
    """``B`` training interactions: ``users``, ``items`` (the positives), ``negatives`` ``(B, n)`` sampled items the
    user never interacted with in training, and the interaction's context ``hours`` (0-23) / ``dows`` (0 = Monday),
    all int64. Pairwise models read users/items/negatives; pointwise ones label items 1 and negatives 0."""

    users: torch.Tensor
    items: torch.Tensor
    negatives: torch.Tensor
    hours: torch.Tensor
    dows: torch.Tensor

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def to(self, device: torch.device | str) -> InteractionBatch:
        return InteractionBatch(
            users=self.users.to(device, non_blocking=True),
            items=self.items.to(device, non_blocking=True),
            negatives=self.negatives.to(device, non_blocking=True),
            hours=self.hours.to(device, non_blocking=True),
            dows=self.dows.to(device, non_blocking=True),
        )
