"""A seeded share of a data set's users, every item kept: data with few users and many items from any source.

``data.source.user_fraction=0.3`` (any source; ``data.source.user_sample_seed`` picks which users, 0 by default) keeps
``round(fraction * n)`` of the users who have interactions, drawn uniformly without replacement, with all their rows and
their demographics; the item catalogue is kept whole. Both keys are part of the source config, so of the prepared
split's hash: each fraction and seed is its own split. It is how ``benchmarks/tune.py`` checks that defaults chosen on
ML-100K hold when there are fewer users per item.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recstack.data.schema import USER_KEY, DataError, Dataset


def sample_users(dataset: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """``dataset`` with a seeded ``fraction`` of its interacting users (at least one), all items kept.

    The users are ranked by their id's string form before the draw, so the same fraction and seed pick the same users
    whatever order the source lists them in. ``fraction`` 1 returns ``dataset`` itself."""
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"data.source.user_fraction={fraction}: the share of users to keep must be in (0, 1]")
    if fraction == 1.0:
        return dataset
    interactions = dataset.interactions
    users = np.array(sorted(interactions[USER_KEY].astype(str).unique()))
    if len(users) == 0:
        raise DataError(f"{dataset.name}: the source has no interactions to sample users from")
    n_keep = max(1, round(fraction * len(users)))
    kept = users[np.random.default_rng(seed).choice(len(users), size=n_keep, replace=False)]
    keep_rows = interactions[USER_KEY].astype(str).isin(kept).to_numpy()
    keep_users = dataset.users[USER_KEY].astype(str).isin(kept).to_numpy()
    return dataclasses.replace(
        dataset,
        interactions=interactions.loc[keep_rows].reset_index(drop=True),
        users=dataset.users.loc[keep_users].reset_index(drop=True),
        source=f"{dataset.source} (users sampled: {fraction:g}, seed {seed})",
    )
