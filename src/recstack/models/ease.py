"""EASE (Steck, WWW 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): a closed-form item-item regression.

With the binary training matrix ``X`` (users x items), the Gram matrix ``G = X^T X`` and ``P = (G + l2 I)^-1``, the
item-item weights are ``B = -P / diag(P)`` (column ``j`` divided by ``P[j, j]``) with ``diag(B) = 0``, and a user's
scores are ``X_u B``. One hyper-parameter, ``l2`` (the paper's lambda), and no training loop.

Memory is the cost: ``G`` and its inverse are dense ``n_items x n_items`` float64 matrices, solved in place, and the
scoring weights a float32 copy (:func:`ease_fit_bytes`, about 2 x ``n_items^2 x 8`` bytes at the peak). The model refuses
up front, when it is built, a catalogue whose estimate exceeds ``max_memory_gb``: the default 8 GB allows about 22,000
items. ``top_k`` keeps only each item column's ``top_k`` largest weights (by magnitude) as a sparse ``B`` for scoring
and serving; the solve itself stays dense, so it does not lift the bound.

Served as the second stage of the pipeline (``recstack-export run=<retrieval run> ranker_run=<EASE run>``):
:meth:`EASE.item_item_weights` is the dense float32 ``B`` the bundle holds (:mod:`recstack.bundle.item_item`, bounded
at ``n_items^2 x 4`` bytes by the export's ``item_item.max_memory_gb``).
"""

from __future__ import annotations

import math
from typing import Self

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch

from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender, fold_in_matrix
from recstack.models.item_knn import sparse_scores
from recstack.models.popularity import _check_shape

# Peak bytes of the fit per n_items^2: the float64 matrix inverted in place (8), the float32 scoring weights (4), and
# headroom for LAPACK's workspace and the Gram matrix's column blocks (the peak RSS measured 12.4 at 9,000 items).
_FIT_BYTES_PER_CELL = 16
# Columns per block when building G (a sparse, then dense, items x block slice at a time) and when pruning B.
_BLOCK = 1024


def ease_fit_bytes(n_items: int) -> int:
    """Estimated peak memory of :meth:`EASE.fit` over ``n_items`` items, in bytes (an upper bound)."""
    return _FIT_BYTES_PER_CELL * n_items * n_items


def max_items_for(max_memory_gb: float) -> int:
    """The largest catalogue whose EASE fit stays within ``max_memory_gb``."""
    return math.isqrt(int(max_memory_gb * 1e9) // _FIT_BYTES_PER_CELL)


def ease_weights(train: sp.spmatrix, l2: float) -> np.ndarray:
    """The dense float64 EASE weights ``B`` (items x items, zero diagonal) of a users x items matrix ``train``.

    ``G + l2 I`` is symmetric positive definite for ``l2 > 0``; it is inverted in place (no second n x n matrix), and
    ``B`` overwrites the inverse.
    """
    if not l2 > 0:
        raise ValueError(f"EASE l2={l2} must be > 0 (it makes G + l2 I invertible)")
    x = sp.csc_matrix(train, dtype=np.float64)
    n_items = x.shape[1]
    xt = x.T.tocsr()
    # Column blocks of G = X^T X straight into one dense matrix: the whole sparse product of a dense-ish Gram matrix
    # would hold ~1.5x its dense size in index arrays before toarray() copies it. Each block stays sparse until its
    # items x block slice, so nothing scales with the number of users.
    gram = np.empty((n_items, n_items), dtype=np.float64, order="F")
    for start in range(0, n_items, _BLOCK):
        stop = min(n_items, start + _BLOCK)
        gram[:, start:stop] = (xt @ x[:, start:stop]).toarray()
    gram[np.diag_indices(n_items)] += l2
    # Fortran order lets LAPACK work in place (overwrite_a); the inverse of a symmetric matrix is symmetric.
    p = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
    del gram
    diag = np.diag(p).copy()
    p /= -diag[None, :]  # B[i, j] = -P[i, j] / P[j, j]
    p[np.diag_indices(n_items)] = 0.0
    return p


def prune_columns(weights: np.ndarray, top_k: int) -> sp.csr_matrix:
    """Sparse float32 copy of ``weights`` keeping, in each column, the ``top_k`` entries of largest magnitude.

    Columns are pruned in blocks, so the temporaries (magnitudes, partition indices) stay ``n x block``."""
    n_rows, n_cols = weights.shape
    k = min(top_k, n_rows)
    rows, cols, vals = [], [], []
    for start in range(0, n_cols, _BLOCK):
        stop = min(n_cols, start + _BLOCK)
        block = weights[:, start:stop]
        top = np.argpartition(-np.abs(block), k - 1, axis=0)[:k]  # (k, block) row indices
        top_vals = np.take_along_axis(block, top, axis=0)
        keep = top_vals != 0
        rows.append(top[keep])
        cols.append(np.broadcast_to(np.arange(start, stop), top.shape)[keep])
        vals.append(top_vals[keep].astype(np.float32))
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=weights.shape, dtype=np.float32
    )


class EASE(Recommender):
    """EASE item-item regression: ``l2`` is the ridge weight (the paper's lambda); ``top_k`` (optional) prunes each
    item's weight column to its ``top_k`` largest magnitudes for sparse scoring; ``max_memory_gb`` bounds the fit."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        l2: float = 300.0,
        top_k: int | None = None,
        max_memory_gb: float = 8.0,
    ) -> None:
        if not l2 > 0:
            raise ValueError(f"EASE l2={l2} must be > 0 (it makes G + l2 I invertible)")
        if top_k is not None and top_k < 1:
            raise ValueError(f"EASE top_k={top_k} must be >= 1, or null to keep the dense weights")
        needed = ease_fit_bytes(n_items)
        if needed > max_memory_gb * 1e9:
            raise ValueError(
                f"EASE over {n_items:,} items needs about {needed / 1e9:.1f} GB for its dense item x item solve "
                f"({_FIT_BYTES_PER_CELL} bytes x n_items^2), above max_memory_gb={max_memory_gb:g} (at most "
                f"{max_items_for(max_memory_gb):,} items). Raise max_memory_gb if the machine has that memory, or "
                "use a sparse model (itemknn) for this catalogue"
            )
        self.n_users = n_users
        self.n_items = n_items
        self.l2 = l2
        self.top_k = top_k
        self.max_memory_gb = max_memory_gb
        self.train: sp.csr_matrix | None = None
        # B: dense float32 (n_items, n_items), or sparse CSR with top_k.
        self.weights: np.ndarray | sp.csr_matrix | None = None

    def fit(self, split: PreparedSplit) -> Self:
        train = split.matrix("train")
        _check_shape(self, train.shape)
        weights = ease_weights(train, self.l2)
        self.weights = weights.astype(np.float32) if self.top_k is None else prune_columns(weights, self.top_k)
        self.train = train.astype(np.float32)
        return self

    def item_item_weights(self) -> np.ndarray:
        """The fitted ``B`` as a dense float32 ``(n_items, n_items)`` array (row = history item, column = scored item):
        what a bundle's item-item ranker holds. A pruned ``B`` (``top_k``) is densified, its dropped weights zero."""
        if self.weights is None:
            raise RuntimeError("EASE is not fitted; call fit(split) first")
        if sp.issparse(self.weights):
            return np.asarray(self.weights.toarray(), dtype=np.float32)
        return np.ascontiguousarray(self.weights, dtype=np.float32)

    def fold_in(self, interactions: sp.spmatrix) -> None:
        """Score from ``interactions`` instead of the training matrix (:class:`recstack.models.base.FoldsIn`)."""
        self.train = fold_in_matrix(self, interactions)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        if self.train is None or self.weights is None:
            raise RuntimeError("EASE is not fitted; call fit(split) first")
        rows = self.train[users.detach().cpu().numpy()]
        if sp.issparse(self.weights):
            return sparse_scores(rows @ self.weights).to(users.device)
        # sparse @ dense: a fresh float32 array the evaluator may mask in place.
        return torch.from_numpy(np.asarray(rows @ self.weights, dtype=np.float32)).to(users.device)
