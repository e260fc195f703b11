"""Negative sampling: items a user has NOT interacted with, uniformly or by popularity, fully vectorised.

A user's positives are a row of a CSR matrix; ``user * n_items + item`` keys of all positives form one sorted array,
so membership of a million (user, item) cells is one ``np.searchsorted``.

* ``uniform`` samples exactly, without rejection: the r-th non-positive of a user with sorted positives ``p_j`` is
  ``r + #{j : p_j - j <= r}``, so we draw ``r`` uniformly in ``[0, n_items - n_positives)`` and map it with one
  ``searchsorted`` over the (also sorted) keys ``user * n_items + p_j - j``. Dense users cost nothing extra.
* ``popularity`` draws from ``count ** alpha`` over the whole catalogue and redraws only the cells that hit a
  positive; cells still rejected after a few rounds (users who hold most of the popular mass) are drawn exactly
  from the user's own distribution by a vectorised binary search on ``cdf(i) - positive_mass_u(i)``. Items with a
  zero weight (count 0) are never drawn.

A user with no possible negative (every item a positive, or, for popularity, every weighted item) is an error
naming the user, never an infinite loop.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

Strategy = Literal["uniform", "popularity"]
_REJECTION_ROUNDS = 4
_CACHE_FRIENDLY = 1 << 20  # sorted arrays longer than this get their queries sorted first


def _searchsorted(sorted_keys: np.ndarray, queries: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
    """``np.searchsorted``, cache-friendly for large arrays: queries in sorted order hit nearby memory.

    With 16M positives, 1M random queries take ~3.3 s; sorting them first, ~0.25 s.
    """
    flat = queries.reshape(-1)
    if len(sorted_keys) <= _CACHE_FRIENDLY or len(flat) < 1024:
        return np.searchsorted(sorted_keys, queries, side=side)
    order = np.argsort(flat)
    found = np.empty(len(flat), dtype=np.int64)
    found[order] = np.searchsorted(sorted_keys, flat[order], side=side)
    return found.reshape(queries.shape)


class NegativeSampler:
    """Samples ``(len(users), n)`` int64 item indices that are never a positive of the row's user."""

    def __init__(
        self,
        positives: sp.csr_matrix,
        strategy: Strategy = "uniform",
        popularity: np.ndarray | None = None,
        alpha: float = 1.0,
    ) -> None:
        if strategy not in ("uniform", "popularity"):
            raise ValueError(f"strategy={strategy!r}: use 'uniform' or 'popularity'")
        csr = sp.csr_matrix(positives)
        if not csr.has_canonical_format:  # duplicates or unsorted columns: fix a copy, never the caller's matrix
            csr = csr.copy()
            csr.sum_duplicates()
        self.strategy: Strategy = strategy
        self.n_users, self.n_items = (int(s) for s in csr.shape)
        self._indptr = csr.indptr.astype(np.int64)
        indices = csr.indices.astype(np.int64)
        row = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self._indptr))
        self._n_pos = np.diff(self._indptr)
        self._keys = row * self.n_items + indices  # sorted: rows ascending, columns ascending within a row
        if strategy == "uniform":
            rank_in_row = np.arange(len(indices), dtype=np.int64) - self._indptr[row]
            self._gap_keys = row * self.n_items + (indices - rank_in_row)
            self._n_free = self.n_items - self._n_pos
            return
        if popularity is None:
            raise ValueError("strategy='popularity' needs popularity= (interactions per item, length n_items)")
        pop = np.asarray(popularity, dtype=np.float64)
        if pop.shape != (self.n_items,) or not np.all(np.isfinite(pop)) or (pop < 0).any():
            raise ValueError(f"popularity must be {self.n_items} finite non-negative counts, got shape {pop.shape}")
        weights = pop**alpha
        weights[pop == 0] = 0.0  # 0 ** 0 would be 1: an unseen item stays unseen even with alpha=0
        if not (weights > 0).any():
            raise ValueError("popularity is zero for every item; nothing can be sampled")
        self._weights = weights
        self._cdf = np.cumsum(weights)
        self._total = float(self._cdf[-1])
        pos_w = weights[indices]
        self._pos_cum = np.concatenate(([0.0], np.cumsum(pos_w)))
        self._free_mass = np.maximum(self._total - np.bincount(row, weights=pos_w, minlength=self.n_users), 0.0)
        self._n_free = int((weights > 0).sum()) - np.bincount(row, weights=pos_w > 0, minlength=self.n_users).astype(
            np.int64
        )

    def sample(self, users: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` negatives for each of ``users`` (with repetition across cells), int64 of shape ``(len(users), n)``."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if n < 0:
            raise ValueError(f"n={n} must be >= 0")
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            raise IndexError(f"user indices must be in [0, {self.n_users}); got {users.min()}..{users.max()}")
        if len(users) == 0 or n == 0:
            return np.empty((len(users), n), dtype=np.int64)
        stuck = self._n_free[users] <= 0
        if stuck.any():
            u = int(users[np.argmax(stuck)])
            what = "every item" if self.strategy == "uniform" else "every item with a non-zero popularity"
            raise ValueError(
                f"user {u} has {what} as a positive, so no negative exists ({int(stuck.sum())} such row(s)); "
                "drop such users before sampling (e.g. a k-core or a smaller positive set)"
            )
        if self.strategy == "uniform":
            return self._uniform(users, n, rng)
        return self._popularity(users, n, rng)

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if len(self._keys) == 0:
            return np.zeros(items.shape, dtype=bool)
        keys = users * self.n_items + items
        pos = np.minimum(_searchsorted(self._keys, keys, "left"), len(self._keys) - 1)
        return self._keys[pos] == keys

    def _uniform(self, users: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        free = self._n_free[users][:, None]
        r = rng.integers(0, free, size=(len(users), n), dtype=np.int64)
        before = _searchsorted(self._gap_keys, users[:, None] * self.n_items + r, "right")
        return r + (before - self._indptr[users][:, None])

    def _popularity(self, users: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        cell_users = np.repeat(users, n)
        out = self._draw_global(len(cell_users), rng)
        todo = np.flatnonzero(self._is_positive(cell_users, out))
        for _ in range(_REJECTION_ROUNDS):
            if len(todo) == 0:
                break
            out[todo] = self._draw_global(len(todo), rng)
            todo = todo[self._is_positive(cell_users[todo], out[todo])]
        while len(todo):  # exact; loops again only if float rounding ever landed on a positive
            out[todo] = self._draw_exact(cell_users[todo], rng)
            todo = todo[self._is_positive(cell_users[todo], out[todo])]
        return out.reshape(len(users), n)

    def _draw_global(self, size: int, rng: np.random.Generator) -> np.ndarray:
        items = np.searchsorted(self._cdf, rng.random(size) * self._total, side="right")
        return np.minimum(items, self.n_items - 1).astype(np.int64)

    def _draw_exact(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Smallest item i with F_u(i) > x, F_u(i) = cdf(i) - (weight of u's positives <= i), x ~ U[0, mass_u)."""
        x = rng.random(len(users)) * self._free_mass[users]
        lo = np.zeros(len(users), dtype=np.int64)
        hi = np.full(len(users), self.n_items - 1, dtype=np.int64)
        base = users * self.n_items
        start = self._indptr[users]
        while (lo < hi).any():
            mid = (lo + hi) // 2
            upto = _searchsorted(self._keys, base + mid, "right")
            f = self._cdf[mid] - (self._pos_cum[upto] - self._pos_cum[start])
            above = f > x
            hi = np.where(above, mid, hi)
            lo = np.where(above, lo, mid + 1)
        return lo

    def epoch_triples(
        self, users: np.ndarray, items: np.ndarray, n_neg: int, rng: np.random.Generator, *, shuffle: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One epoch of ``(users, positives, negatives)`` from training pairs, shuffled; negatives ``(N, n_neg)``."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if users.shape != items.shape:
            raise ValueError(f"users and items differ in shape: {users.shape} vs {items.shape}")
        if shuffle:
            perm = rng.permutation(len(users))
            users, items = users[perm], items[perm]
        return users, items, self.sample(users, n_neg, rng)
