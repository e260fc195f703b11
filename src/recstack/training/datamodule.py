"""Training data as tensors: each epoch, every training interaction once, shuffled, with freshly sampled negatives.

No ``DataLoader`` over rows: an epoch's (user, positive, negatives, context) arrays are built by vectorised passes
with :class:`~recstack.data.sampling.NegativeSampler`, one chunk of ``chunk_rows`` shuffled rows at a time, and sliced
into large batches, which is what keeps a 2-core CPU busy on the model rather than on Python per-row overhead, and
memory bounded on a 50M-interaction split.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import lightning as L
import numpy as np
import torch

from recstack.data.prepared import PreparedSplit
from recstack.models.batches import InteractionBatch
from recstack.models.features import context_from_timestamps


class EpochBatches:
    """An iterable of :class:`InteractionBatch`; each ``iter()`` is one epoch, seeded by ``(seed, epoch)``."""

    def __init__(self, datamodule: InteractionDataModule) -> None:
        self.dm = datamodule
        self._epochs_started = 0

    def _world(self) -> tuple[int, int]:
        trainer = self.dm.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def __len__(self) -> int:
        _, world = self._world()
        return math.ceil(len(self.dm.users) // world / self.dm.batch_size)

    def __iter__(self) -> Iterator[InteractionBatch]:
        trainer = self.dm.trainer
        # The trainer's epoch (not a private counter) so a resumed run samples what the uninterrupted one would.
        epoch = trainer.current_epoch if trainer is not None else self._epochs_started
        self._epochs_started += 1
        rng = np.random.default_rng([self.dm.seed, epoch])
        order = rng.permutation(len(self.dm.users)) if self.dm.shuffle else np.arange(len(self.dm.users))
        rank, world = self._world()
        if world > 1:  # DDP: every rank draws the same permutation and takes an equal-sized, disjoint share of it
            order = order[: len(order) // world * world][rank::world]
            # Negatives from the rank's own stream: drawn from the shared one, every rank would repeat the same draws.
            rng = np.random.default_rng([self.dm.seed, epoch, world, rank])
        # One chunk of rows at a time: the epoch's only full-size array is its permutation. A split of at most
        # chunk_rows rows is one chunk, so its draws (and results) are those of gathering the whole epoch at once.
        for lo in range(0, len(order), self.dm.chunk_rows):
            rows = order[lo : lo + self.dm.chunk_rows]
            users = self.dm.users[rows]
            negatives = self.dm.sampler.sample(users, self.dm.negatives, rng)
            t = torch.from_numpy
            users_t, items_t = t(users), t(self.dm.items[rows])
            hours_t, dows_t = t(self.dm.hours[rows]), t(self.dm.dows[rows])
            neg_t = t(np.ascontiguousarray(negatives, dtype=np.int64))
            for start in range(0, len(rows), self.dm.batch_size):
                s = slice(start, start + self.dm.batch_size)
                yield InteractionBatch(users_t[s], items_t[s], neg_t[s], hours_t[s], dows_t[s])


class InteractionDataModule(L.LightningDataModule):
    """Batches of a split's training interactions with ``negatives`` sampled items each.

    Validation and test have one placeholder batch: the model is scored on the whole split at the end of each
    validation / test epoch by the shared full-ranking evaluator (see :class:`~recstack.training.module.RecommenderModule`).
    """

    def __init__(
        self,
        split: PreparedSplit,
        batch_size: int = 2048,
        negatives: int = 1,
        sampling: Literal["uniform", "popularity"] = "uniform",
        alpha: float = 1.0,
        seed: int = 0,
        shuffle: bool = True,
        chunk_rows: int = 1 << 20,
    ) -> None:
        super().__init__()
        if batch_size < 1 or negatives < 1 or chunk_rows < 1:
            raise ValueError(
                f"batch_size={batch_size}, negatives={negatives} and chunk_rows={chunk_rows} must all be at least 1"
            )
        from recstack.data.sampling import NegativeSampler

        self.split = split
        self.batch_size = batch_size
        self.negatives = negatives
        self.seed = seed
        self.shuffle = shuffle
        # Rows gathered (and given their negatives) at a time, a whole number of batches: bounds an epoch's copies
        # to chunk_rows x (negatives + 4) x 8 bytes however large the split (benchmarks/scale.py: 40M rows).
        self.chunk_rows = max(batch_size, chunk_rows // batch_size * batch_size)
        train = split.train
        self.users = train["user_idx"].to_numpy(np.int64)
        self.items = train["item_idx"].to_numpy(np.int64)
        self.hours, self.dows = context_from_timestamps(train["timestamp"].to_numpy())
        self.sampler = NegativeSampler(
            split.matrix("train"), strategy=sampling, popularity=split.item_popularity, alpha=alpha
        )

    def train_dataloader(self) -> EpochBatches:
        return EpochBatches(self)

    def val_dataloader(self) -> list[int]:
        return [0]

    def test_dataloader(self) -> list[int]:
        return [0]
