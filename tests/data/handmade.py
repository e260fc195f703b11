"""Datasets built in tests: interactions from plain lists, no source files."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recstack.data.schema import Dataset, empty_items, empty_users


def make_dataset(
    users: Sequence[object],
    items: Sequence[object],
    timestamps: Sequence[int] | None = None,
    values: Sequence[float] | None = None,
    *,
    name: str = "handmade",
    item_meta: pd.DataFrame | None = None,
    user_meta: pd.DataFrame | None = None,
) -> Dataset:
    n = len(users)
    frame = pd.DataFrame(
        {
            "user_id": pd.Series([str(u) for u in users], dtype="str"),
            "item_id": pd.Series([str(i) for i in items], dtype="str"),
            "timestamp": np.asarray(timestamps if timestamps is not None else np.arange(n), dtype=np.int64),
            "value": np.asarray(values if values is not None else np.ones(n), dtype=np.float32),
            "event_type": pd.Series(["rating"] * n, dtype="str"),
        }
    )
    return Dataset(
        name=name,
        interactions=frame,
        items=item_meta if item_meta is not None else empty_items(),
        users=user_meta if user_meta is not None else empty_users(),
        source="tests",
    )


def random_dataset(n_users: int, n_items: int, n_rows: int, seed: int = 0, *, repeats: bool = False) -> Dataset:
    """Skewed random interactions; unique (user, item) pairs unless ``repeats``."""
    rng = np.random.default_rng(seed)
    u = rng.zipf(1.2, n_rows * 3) % n_users
    i = np.minimum(rng.exponential(n_items / 4, n_rows * 3).astype(np.int64), n_items - 1)
    if not repeats:
        _, first = np.unique(u * n_items + i, return_index=True)
        keep = np.sort(first)[:n_rows]
        if len(keep) < n_rows:
            raise ValueError(f"only {len(keep)} unique pairs; ask for fewer rows or more users/items")
        u, i = u[keep], i[keep]
    else:
        u, i = u[:n_rows], i[:n_rows]
    ts = rng.integers(1_000_000_000, 1_100_000_000, len(u))
    return make_dataset([f"u{x}" for x in u], [f"i{x}" for x in i], ts, rng.integers(1, 6, len(u)))


def write_events_csv(path, n_users: int = 40, n_items: int = 30, per_user: int = 12, seed: int = 0):
    """A small event log CSV (``user_id,item_id,timestamp,value,event_type``) for the ``events`` source."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for j, i in enumerate(rng.choice(n_items, size=per_user, replace=False)):
            rows.append((f"u{u}", f"i{i}", 1_600_000_000 + 3600 * j + u, float(rng.integers(1, 6)), "click"))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "value", "event_type"])
    frame.to_csv(path, index=False)
    return path


def broken_items_source(**options: object) -> Dataset:
    """A source whose items table cannot be written to Parquet: preparation fails in the middle of writing."""
    ds = random_dataset(20, 15, 120, seed=1)
    items = empty_items()
    items = pd.DataFrame({c: items[c] for c in items.columns})
    items = pd.concat([items, pd.DataFrame({"item_id": ["i1", "i2"], "odd": [1, "mixed types"]})], ignore_index=True)
    return Dataset(name="broken", interactions=ds.interactions, items=items, users=ds.users, source="tests")
