"""Bundle folder layout: file names, table columns, and the sha256 every file is checked against.

* ``manifest.json``: :class:`~recstack.bundle.manifest.BundleManifest` (with a digest over its own content).
* ``users.parquet``: ``user_idx`` (0..n_users-1), ``user_id``, demographic columns. ``items.parquet``: ``item_idx``
  (0..n_items-1), ``item_id``, ``title``, ``year``, ``categories`` (list of str), ``popularity`` (int64 train count).
  Together they are the id maps, both ways.
* ``user_embeddings.npy`` (n_users, d), ``item_embeddings.npy`` (n_items, d): float32, C-contiguous; scores are
  their dot products (LightGCN propagation already applied).
* ``item_text_embeddings.npy`` (n_items, text_dim) float32: text vectors for cold-start items and session fold-in;
  absent when the run had none (``manifest.text_dim`` is then null).
* ``seen_indptr.npy`` (n_users+1,) int64, ``seen_indices.npy`` int32: training interactions as CSR, to filter seen
  items.
* ``items.faiss``: the retrieval index over ``item_embeddings`` (``faiss.write_index``), described by
  ``manifest.index``.
* ``ranker.onnx`` (optional): the re-ranker, honouring ``manifest.ranker`` (:mod:`recstack.bundle.contract`).

No pickle anywhere: arrays are read with ``allow_pickle=False``, tables are parquet, the index is FAISS's own format.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

MANIFEST = "manifest.json"
USERS = "users.parquet"
ITEMS = "items.parquet"
USER_EMB = "user_embeddings.npy"
ITEM_EMB = "item_embeddings.npy"
TEXT_EMB = "item_text_embeddings.npy"
SEEN_INDPTR = "seen_indptr.npy"
SEEN_INDICES = "seen_indices.npy"
INDEX = "items.faiss"
RANKER = "ranker.onnx"
REQUIRED_FILES: tuple[str, ...] = (USERS, ITEMS, USER_EMB, ITEM_EMB, SEEN_INDPTR, SEEN_INDICES, INDEX)
ITEM_COLUMNS: tuple[str, ...] = ("item_idx", "item_id", "title", "year", "categories", "popularity")
USER_COLUMNS: tuple[str, ...] = ("user_idx", "user_id")


class BundleError(ValueError):
    """A bundle that cannot be trusted or read: the message names the file and what differs."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_table(frame: pd.DataFrame, columns: tuple[str, ...], idx_col: str, n: int, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BundleError(f"{what}: missing column(s) {missing}; it has {list(frame.columns)}")
    if len(frame) != n or not np.array_equal(frame[idx_col].to_numpy(np.int64), np.arange(n)):
        raise BundleError(f"{what}: {idx_col} must be exactly 0..{n - 1} in order (got {len(frame)} rows)")
