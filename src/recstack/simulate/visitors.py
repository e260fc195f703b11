"""Who visits: the users of a prepared split's test stage, each with their held-out items (pure, seeded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recstack.data.prepared import PreparedSplit

MAX_RATING = 10.0  # the collector's range for a rating's value (recstack.collect.events.VALUE_RANGES)


@dataclass(frozen=True)
class Visitor:
    """One replayed user: the id the service knows them by, their index in the split, and their distinct held-out
    items (ids, with the value of their first test interaction, clipped to a rating's range)."""

    user_id: str
    user_idx: int
    test_items: tuple[str, ...]
    test_values: tuple[float, ...]


def held_out_visitors(split: PreparedSplit, n_users: int | None = None, seed: int = 0) -> list[Visitor]:
    """The users with at least one test interaction, all of them or a seeded sample of ``n_users``, in user-index
    order. The held-out set is the stage's distinct items: exactly the relevant set the offline evaluator scores
    (``split.matrix("test")``, duplicates collapsed)."""
    test = split.frame("test")
    if test.empty:
        raise ValueError(f"{split!r} has no test interactions: nobody to replay")
    first = test.drop_duplicates(["user_idx", "item_idx"]).sort_values(["user_idx", "item_idx"], kind="stable")
    users = np.unique(first["user_idx"].to_numpy(np.int64))
    if n_users is not None:
        if isinstance(n_users, bool) or not isinstance(n_users, int) or n_users < 1:
            raise ValueError(f"n_users={n_users!r}: give a positive number of users, or null for all of them")
        if n_users < len(users):
            users = np.sort(np.random.default_rng(seed).choice(users, size=n_users, replace=False))
    chosen = first[first["user_idx"].isin(users)]
    values = chosen["value"].to_numpy(np.float64) if "value" in chosen.columns else np.ones(len(chosen))
    chosen = chosen.assign(_value=np.clip(np.nan_to_num(values, nan=1.0), 0.0, MAX_RATING))
    out = []
    for user_idx, rows in chosen.groupby("user_idx", sort=True):
        out.append(
            Visitor(
                user_id=str(rows["user_id"].iloc[0]),
                user_idx=int(user_idx),
                test_items=tuple(rows["item_id"].astype(str)),
                test_values=tuple(float(v) for v in rows["_value"]),
            )
        )
    return out
