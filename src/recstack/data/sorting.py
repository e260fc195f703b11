"""Fast stable sorts of non-negative integer keys, the workhorse of cleaning and splitting at 20M-row scale.

``np.argsort`` of 20M int64 keys takes ~2 s here, ``np.sort`` ~0.25 s. When a key and a row position fit together
in 63 bits we pack ``key << bits | position``, sort the packed values and read the positions back: that is a stable
argsort at ``np.sort`` speed. Several keys sort least-significant first, each pass stable (LSD radix style).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _bits(n: int) -> int:
    return max(int(n).bit_length(), 1)


def stable_argsort(key: np.ndarray) -> np.ndarray:
    """Stable argsort (int64 positions) of a non-negative integer array."""
    key = np.asarray(key)
    n = len(key)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    top = int(key.max())
    if int(key.min()) < 0:
        raise ValueError("stable_argsort takes non-negative keys; shift them first")
    pos_bits = _bits(n - 1)
    if _bits(top) + pos_bits <= 63:
        packed = key.astype(np.int64)  # a copy; the in-place steps below avoid three more 8-byte temporaries
        packed <<= pos_bits
        packed |= np.arange(n, dtype=np.int64)
        packed.sort()
        packed &= (1 << pos_bits) - 1
        return packed
    return np.argsort(key, kind="stable").astype(np.int64, copy=False)


def is_sorted(key: np.ndarray) -> bool:
    """True when ``key`` is non-decreasing (one linear pass; lets callers skip a sort)."""
    return bool(len(key) < 2 or (key[1:] >= key[:-1]).all())


def stable_lexsort(keys: Sequence[np.ndarray]) -> np.ndarray:
    """Like ``np.lexsort``: the LAST key is the primary one; ties keep input order. Keys are non-negative ints."""
    if not keys:
        raise ValueError("stable_lexsort needs at least one key")
    order = np.arange(len(keys[0]), dtype=np.int64)
    for key in keys:  # least significant first; each pass is stable so earlier passes break its ties
        order = order[stable_argsort(np.asarray(key)[order])]
    return order


def group_starts(sorted_key: np.ndarray) -> np.ndarray:
    """Start positions of the runs of equal values in a sorted array (empty for an empty array)."""
    if len(sorted_key) == 0:
        return np.empty(0, dtype=np.int64)
    change = np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1
    return np.concatenate(([0], change)).astype(np.int64)
