"""The item-item re-ranker (``manifest.ranker.kind == "item_item"``): a dense item x item weight matrix ``B``, e.g.
EASE's (:mod:`recstack.models.ease`), scoring a user's candidates by ``B[history, candidates].sum(0)``: the sum of
each candidate's weights from the items the user interacted with, which is ``X_u B`` restricted to the candidates.

Unlike the ONNX ranker, it needs no per-user row: any user with a history is scored, including a user the bundle does
not know whose recent activity (the online store) is the history, so session signals re-rank cold users too.

Memory is the bound: ``B`` is float32, ``n_items^2 x 4`` bytes (:func:`item_item_bytes`; 11 MB for ML-100K's 1,682
items, 1.6 GB at 20,000). Export refuses a catalogue beyond ``item_item.max_memory_gb`` (``configs/export.yaml``;
:func:`check_item_item_bound`): the default, 2 GB (about 22,000 items), admits the catalogues that EASE's own default
``max_memory_gb=8`` (16 bytes per cell at its fit) admits. Serving memory-maps the file read-only, so the worker
processes of one server share one copy in the page cache instead of holding one each.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from recstack.bundle.layout import ITEM_ITEM, BundleError

BYTES_PER_CELL = 4  # float32
# Summing whole history rows reads len(history) x n_items cells, contiguously; gathering only the candidates' cells
# reads len(history) x len(candidates), scattered, each about 30x dearer (measured on ML-100K: 0.06 vs 0.20 ms p50 for
# 117 history items x 200 candidates of 1,682). Whole rows while the catalogue is within this many times the candidates.
ROWS_FACTOR = 16
DEFAULT_MAX_MEMORY_GB = 2.0
MAX_MEMORY_OPTION = "item_item.max_memory_gb"


def item_item_bytes(n_items: int) -> int:
    """Bytes of the dense float32 item-item matrix over ``n_items`` items."""
    return BYTES_PER_CELL * n_items * n_items


def max_items_for(max_memory_gb: float) -> int:
    """The largest catalogue whose item-item matrix fits in ``max_memory_gb``."""
    return math.isqrt(int(max_memory_gb * 1e9) // BYTES_PER_CELL)


def check_item_item_bound(n_items: int, max_memory_gb: float) -> None:
    """Raise :class:`BundleError` when the matrix over ``n_items`` items exceeds ``max_memory_gb``; the message names
    the option that raises the bound and what to do instead."""
    needed = item_item_bytes(n_items)
    if needed > max_memory_gb * 1e9:
        raise BundleError(
            f"an item-item ranker over {n_items:,} items is a dense {n_items:,} x {n_items:,} float32 matrix of "
            f"{needed / 1e9:.2f} GB ({BYTES_PER_CELL} bytes x n_items^2), above {MAX_MEMORY_OPTION}="
            f"{max_memory_gb:g} (at most {max_items_for(max_memory_gb):,} items). Raise {MAX_MEMORY_OPTION} if every "
            "serving machine has that memory to spare (the workers share one memory-mapped copy), or export without "
            "ranker_run (retrieval alone) or with a Wide & Deep ranker_run"
        )


def load_item_item(path: str | Path, n_items: int) -> np.ndarray:
    """The bundle's matrix, memory-mapped read-only (nothing is read until scored), checked to be ``(n_items,
    n_items)`` float32."""
    try:
        weights = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle: refuse them
        raise BundleError(f"{ITEM_ITEM}: cannot be read without pickle ({exc}); the bundle is not trusted") from exc
    if weights.dtype != np.float32 or weights.shape != (n_items, n_items):
        raise BundleError(
            f"{ITEM_ITEM}: {weights.dtype} {weights.shape}, manifest says float32 ({n_items}, {n_items}); "
            "export the bundle again"
        )
    return weights


class ItemItemRanker:
    """Scores candidates by the summed weights from a history: ``B[history, candidates].sum(0)`` (float32).

    Beyond a small catalogue only the ``len(history) x len(candidates)`` cells are read, so a request's cost does not
    grow with the catalogue (:data:`ROWS_FACTOR`)."""

    def __init__(self, weights: np.ndarray) -> None:
        if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
            raise ValueError(f"item-item weights must be square, got shape {weights.shape}")
        self.weights = np.asarray(weights)  # a memmap stays mapped: asarray is a view, not a copy
        self.n_items = int(weights.shape[0])

    def score(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """``(len(candidates),)`` float32 scores; zeros for an empty history. Both hold item indices ``< n_items``."""
        history = np.asarray(history, dtype=np.int64)
        candidates = np.asarray(candidates, dtype=np.int64)
        if not len(history) or not len(candidates):
            return np.zeros(len(candidates), dtype=np.float32)
        if self.n_items <= ROWS_FACTOR * len(candidates):
            return self.weights[history].sum(axis=0, dtype=np.float32)[candidates]
        return self.weights[np.ix_(history, candidates)].sum(axis=0, dtype=np.float32)
