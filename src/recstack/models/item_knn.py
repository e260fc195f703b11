"""Item-based k-nearest neighbours (cosine), and the sparse top-N similarity both KNN baselines are built on.

Score of item ``j`` for user ``u`` = sum of ``sim(i, j)`` over the items ``i`` the user trained on that are among ``j``'s
``k_neighbors`` most similar items (RecBole's ItemKNN: similarity columns pruned to the top N, ``score = X @ W``).
"""

from __future__ import annotations

from typing import Literal, Self

import numpy as np
import scipy.sparse as sp
import torch

from recstack.data.prepared import PreparedSplit
from recstack.models.base import Recommender, fold_in_matrix
from recstack.models.popularity import _check_shape

Similarity = Literal["cosine", "pearson"]
# Dense working memory of one block of similarity rows (the block's rows x all rows, float32, plus temporaries).
DEFAULT_BLOCK_BYTES = 256 << 20


def top_n_similarity(
    rows: sp.spmatrix,
    k_neighbors: int,
    similarity: Similarity = "cosine",
    shrink: float = 0.0,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> sp.csr_matrix:
    """Sparse ``(n, n)`` matrix whose row ``r`` holds the ``k_neighbors`` rows of ``rows`` most similar to row ``r``
    (itself excluded; only positive similarities kept).

    ``cosine``: ``x_r . x_s / (|x_r| |x_s| + shrink)``. ``pearson``: the correlation of the two full rows (zeros
    included), i.e. the cosine of the mean-centred rows, computed from the sparse dot products with a rank-one
    correction so nothing dense of size ``n x d`` is built. Rows are processed in blocks whose dense ``block x n``
    similarity fits ``block_bytes``, so no dense ``n x n`` matrix exists for large ``n``.
    """
    if k_neighbors < 1:
        raise ValueError(f"k_neighbors={k_neighbors} must be >= 1")
    if similarity not in ("cosine", "pearson"):
        raise ValueError(f"similarity={similarity!r}; choose 'cosine' or 'pearson'")
    if shrink < 0:
        raise ValueError(f"shrink={shrink} must be >= 0")
    a = sp.csr_matrix(rows, dtype=np.float32)
    n, d = a.shape
    k = min(k_neighbors, n - 1)
    if k < 1:
        return sp.csr_matrix((n, n), dtype=np.float32)
    squares = np.asarray(a.multiply(a).sum(axis=1), dtype=np.float64).ravel()
    sums = np.asarray(a.sum(axis=1), dtype=np.float64).ravel()
    # Pearson's norm is that of the centred row: sum x^2 - (sum x)^2 / d.
    centred = np.maximum(squares - sums**2 / d, 0.0) if similarity == "pearson" else squares
    norms = np.sqrt(centred)
    at = a.T.tocsc()
    # Per block cell: float64 dot and denominator, float32 similarity, int64 partition indices (~32 bytes).
    block = int(max(1, min(n, block_bytes // (n * 32))))
    out_rows, out_cols, out_vals = [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        dots = (a[start:stop] @ at).toarray().astype(np.float64)
        if similarity == "pearson":
            dots -= np.outer(sums[start:stop], sums) / d
        denom = np.outer(norms[start:stop], norms) + shrink
        sim = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0).astype(np.float32)
        sim[np.arange(stop - start), np.arange(start, stop)] = 0.0  # never one's own neighbour
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(sim, top, axis=1)
        keep = vals > 0
        out_rows.append(np.broadcast_to(np.arange(start, stop)[:, None], top.shape)[keep])
        out_cols.append(top[keep])
        out_vals.append(vals[keep])
    return sp.csr_matrix((np.concatenate(out_vals), (np.concatenate(out_rows), np.concatenate(out_cols))), shape=(n, n))


def sparse_scores(matrix: sp.spmatrix) -> torch.Tensor:
    """A float32 torch tensor of a (small, per-chunk) sparse score matrix."""
    return torch.from_numpy(np.asarray(matrix.toarray(), dtype=np.float32))


class ItemKNN(Recommender):
    """Item-based collaborative filtering with cosine similarity, each item's neighbourhood pruned to the top N."""

    def __init__(self, n_users: int, n_items: int, k_neighbors: int = 100, shrink: float = 0.0) -> None:
        self.n_users = n_users
        self.n_items = n_items
        self.k_neighbors = k_neighbors
        self.shrink = shrink
        self.train: sp.csr_matrix | None = None
        self.neighbours_t: sp.csr_matrix | None = None  # W^T: row j holds j's neighbours i with sim(i, j)

    def fit(self, split: PreparedSplit) -> Self:
        train = split.matrix("train")
        _check_shape(self, train.shape)
        self.train = train.astype(np.float32)
        neighbours = top_n_similarity(train.T, self.k_neighbors, "cosine", self.shrink)
        self.neighbours_t = neighbours.T.tocsr()
        return self

    def fold_in(self, interactions: sp.spmatrix) -> None:
        """Score from ``interactions`` instead of the training matrix (:class:`recstack.models.base.FoldsIn`)."""
        self.train = fold_in_matrix(self, interactions)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        if self.train is None or self.neighbours_t is None:
            raise RuntimeError("ItemKNN is not fitted; call fit(split) first")
        idx = users.detach().cpu().numpy()
        # score(u, j) = sum_i x_ui W[i, j], W's column j = j's top-N neighbours.
        return sparse_scores(self.train[idx] @ self.neighbours_t.T).to(users.device)
