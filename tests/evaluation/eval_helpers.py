"""Helpers for the evaluation tests: splits built in memory from (user, item) pairs, and a fixed dot-product model."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recstack.data.prepared import FORMAT_VERSION, PreparedSplit
from recstack.models.base import Recommender


def _frame(pairs: Iterable[tuple[int, int]]) -> pd.DataFrame:
    arr = np.array(list(pairs), dtype=np.int32).reshape(-1, 2)
    return pd.DataFrame(
        {
            "user_id": ["u" + str(u) for u in arr[:, 0]],
            "item_id": ["i" + str(i) for i in arr[:, 1]],
            "user_idx": arr[:, 0],
            "item_idx": arr[:, 1],
            "timestamp": np.zeros(len(arr), dtype=np.int64),
            "value": np.ones(len(arr), dtype=np.float32),
            "event_type": "rating",
        }
    )


def make_split(
    train: Iterable[tuple[int, int]],
    valid: Iterable[tuple[int, int]],
    test: Iterable[tuple[int, int]],
    n_users: int,
    n_items: int,
    config_hash: str = "mem00000",
) -> PreparedSplit:
    """A PreparedSplit held in memory (no files), with a gender and an age column."""
    users = pd.DataFrame(
        {
            "user_idx": np.arange(n_users, dtype=np.int32),
            "user_id": [f"u{u}" for u in range(n_users)],
            "gender": ["M" if u % 2 else "F" for u in range(n_users)],
            "age": [str(18 + (u * 7) % 50) for u in range(n_users)],
        }
    )
    items = pd.DataFrame({"item_idx": np.arange(n_items, dtype=np.int32), "item_id": [f"i{i}" for i in range(n_items)]})
    manifest = {
        "format_version": FORMAT_VERSION,
        "dataset": "memory",
        "config_hash": config_hash,
        "n_users": n_users,
        "n_items": n_items,
    }
    return PreparedSplit(Path("."), manifest, _frame(train), _frame(valid), _frame(test), items, users)


def random_split(n_users: int, n_items: int, per_user: int = 12, seed: int = 0) -> PreparedSplit:
    """Each user: ``per_user`` distinct random items, 80/10/10 over train/valid/test (at least one each)."""
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        n_test = max(1, per_user // 10)
        for i in items[:n_test]:
            test.append((u, int(i)))
        for i in items[n_test : 2 * n_test]:
            valid.append((u, int(i)))
        for i in items[2 * n_test :]:
            train.append((u, int(i)))
    return make_split(train, valid, test, n_users, n_items)


class DotModel(Recommender):
    """Random fixed user/item vectors; score = inner product."""

    def __init__(self, n_users: int, n_items: int, dim: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.n_users, self.n_items = n_users, n_items
        self.users = torch.randn(n_users, dim, generator=g)
        self.items = torch.randn(n_items, dim, generator=g)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.users[users] @ self.items.T


class TableModel(Recommender):
    """Scores read from a fixed (n_users, n_items) table; returns views of it, which the evaluator must not modify."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = torch.as_tensor(table, dtype=torch.float32)
        self.n_users, self.n_items = self.table.shape

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.table[users]
