"""The tensor-batch DataModule: negatives are never positives, epochs are seeded, DDP ranks get disjoint shares."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from recstack.data.prepared import PreparedSplit
from recstack.training.datamodule import InteractionDataModule


def epoch(dm: InteractionDataModule) -> list:
    return list(dm.train_dataloader())


def test_batches_cover_the_training_set_with_true_negatives(tiny_split: PreparedSplit) -> None:
    dm = InteractionDataModule(tiny_split, batch_size=64, negatives=3, seed=0)
    batches = epoch(dm)
    assert len(batches) == len(dm.train_dataloader())
    users = torch.cat([b.users for b in batches]).numpy()
    negatives = torch.cat([b.negatives for b in batches]).numpy()
    assert len(users) == len(tiny_split.train) and negatives.shape == (len(users), 3)
    positives = tiny_split.matrix("train")
    assert np.asarray(positives[np.repeat(users, 3), negatives.ravel()]).sum() == 0
    assert all(b.hours.max() < 24 and b.dows.max() < 7 for b in batches)


def test_epochs_are_seeded(tiny_split: PreparedSplit) -> None:
    first = epoch(InteractionDataModule(tiny_split, batch_size=64, negatives=2, seed=3))
    again = epoch(InteractionDataModule(tiny_split, batch_size=64, negatives=2, seed=3))
    assert all(torch.equal(a.negatives, b.negatives) and torch.equal(a.items, b.items) for a, b in zip(first, again))


def test_ddp_ranks_get_disjoint_equal_shares(tiny_split: PreparedSplit) -> None:
    shares = []
    for rank in range(2):
        dm = InteractionDataModule(tiny_split, batch_size=32, negatives=1, seed=0)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=0)  # what DDP's trainer reports
        batches = epoch(dm)
        assert len(batches) == len(dm.train_dataloader())
        shares.append({(int(u), int(i)) for b in batches for u, i in zip(b.users, b.items)})
    assert len(shares[0]) == len(shares[1]) == len(tiny_split.train) // 2
    assert not shares[0] & shares[1]


def test_chunked_epochs_cover_every_row_once_with_true_negatives(tiny_split: PreparedSplit) -> None:
    dm = InteractionDataModule(tiny_split, batch_size=16, negatives=2, seed=1, chunk_rows=40)
    assert dm.chunk_rows == 32  # a whole number of batches
    batches = epoch(dm)
    assert len(batches) == len(dm.train_dataloader())
    pairs = sorted((int(u), int(i)) for b in batches for u, i in zip(b.users, b.items))
    train = tiny_split.train
    assert pairs == sorted(zip(train["user_idx"].tolist(), train["item_idx"].tolist()))
    users = torch.cat([b.users for b in batches]).numpy()
    negatives = torch.cat([b.negatives for b in batches]).numpy()
    assert np.asarray(tiny_split.matrix("train")[np.repeat(users, 2), negatives.ravel()]).sum() == 0


def test_a_split_within_one_chunk_draws_what_the_whole_epoch_at_once_drew(tiny_split: PreparedSplit) -> None:
    """chunk_rows above the split's size: the permutation and the negatives of one pass, as before chunking."""
    dm = InteractionDataModule(tiny_split, batch_size=64, negatives=3, seed=5)
    assert dm.chunk_rows >= len(tiny_split.train)
    rng = np.random.default_rng([5, 0])
    order = rng.permutation(len(dm.users))
    expected = dm.sampler.sample(dm.users[order], 3, rng)
    batches = epoch(dm)
    np.testing.assert_array_equal(torch.cat([b.negatives for b in batches]).numpy(), expected)
    np.testing.assert_array_equal(torch.cat([b.items for b in batches]).numpy(), dm.items[order])
