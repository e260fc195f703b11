"""Arrays that grow by rows in amortised O(1): the served catalogue's per-item arrays when items are added live.

Rows live in a buffer of spare capacity (doubled when full); :attr:`GrowingRows.view` is the used part, a view, so
readers index it like the plain array it replaces and adding a row copies the whole buffer only log(n) times.
"""

from __future__ import annotations

import numpy as np


class GrowingRows:
    """A 1-D or 2-D array that rows are appended to (:meth:`append`); :attr:`view` is the current array."""

    def __init__(self, initial: np.ndarray) -> None:
        initial = np.asarray(initial)
        self._buf = np.empty((max(4, 2 * len(initial)), *initial.shape[1:]), dtype=initial.dtype)
        self._buf[: len(initial)] = initial
        self._n = len(initial)

    @property
    def view(self) -> np.ndarray:
        return self._buf[: self._n]

    def __len__(self) -> int:
        return self._n

    def append(self, row: object) -> int:
        """Append one row; returns its position."""
        if self._n == len(self._buf):
            bigger = np.empty((2 * len(self._buf), *self._buf.shape[1:]), dtype=self._buf.dtype)
            bigger[: self._n] = self._buf[: self._n]
            self._buf = bigger
        self._buf[self._n] = row
        self._n += 1
        return self._n - 1

    def widen(self, columns: int) -> None:
        """A 2-D array gains ``columns`` zero columns (e.g. a category no item had)."""
        if self._buf.ndim != 2:
            raise ValueError("only a 2-D array can be widened")
        wider = np.zeros((len(self._buf), self._buf.shape[1] + columns), dtype=self._buf.dtype)
        wider[: self._n, : self._buf.shape[1]] = self._buf[: self._n]
        self._buf = wider
