"""Bundle folder layout: what a bundle holds, file by file, and the sha256 every file is checked against.

A bundle holds what serving needs and nothing more about people:

* ``manifest.json``: :class:`~recstack.bundle.manifest.BundleManifest` (with a digest over its own content), which also
  records ``erased_users``: how many trained users export dropped because they had asked to be erased.
* ``users.parquet``: ``user_idx`` (ascending, unique, ``< n_users``), ``user_id`` (the training data's id: a keyed
  pseudonym for lake-trained bundles, the data set's own id for public data such as MovieLens) and only the
  demographic columns the popularity-by-segment fallback can use: at most :data:`MAX_SEGMENT_VALUES` distinct values
  (gender, age band, occupation; never a zip code, a city or any other quasi-identifier, nor ML-100K's age in years,
  which has 61). Erased users have no row: their ``user_idx`` is a hole, so their id can never be looked up and
  serving treats them as unknown (cold start).
* ``items.parquet``: ``item_idx`` (0..n_items-1), ``item_id``, ``title``, ``year``, ``categories`` (list of str),
  ``popularity`` (int64 train count). With ``users.parquet``, the id maps both ways.
* ``user_embeddings.npy`` (n_users, d), ``item_embeddings.npy`` (n_items, d): float32, C-contiguous; scores are
  their dot products (LightGCN propagation already applied). The row of an erased user is all zeros.
* ``item_text_embeddings.npy`` (n_items, text_dim) float32: text vectors for cold-start items and session fold-in;
  absent when the run had none (``manifest.text_dim`` is then null).
* ``seen_indptr.npy`` (n_users+1,) int64, ``seen_indices.npy`` int32: training interactions as CSR, to filter seen
  items. The row of an erased user is empty.
* ``items.faiss``: the retrieval index over ``item_embeddings`` (``faiss.write_index``), described by
  ``manifest.index``.
* ``ranker.onnx`` (optional): the re-ranker, honouring ``manifest.ranker`` (:mod:`recstack.bundle.contract`); its
  per-user tables (the rows its ``user_idx`` input gathers) are zero for erased users.
* ``item_item.npy`` (optional, instead of ``ranker.onnx``; ``manifest.ranker.kind == "item_item"``): the item-item
  re-ranker's dense ``(n_items, n_items)`` float32 weights ``B`` (EASE's), row = history item, column = candidate
  (:mod:`recstack.bundle.item_item`; bounded to ``n_items^2 x 4`` bytes <= ``item_item.max_memory_gb`` at export).
* The content section (optional, ``manifest.content``; :mod:`recstack.bundle.content`): ``content_items.parquet``
  (``content_idx`` 0..n-1, ``item_id``, ``title``, ``categories``, ``text``: the text encoded, ``updated_ms``: 0 for
  the training catalogue, the upsert's time for items added or changed through ``POST /items``), its first
  ``n_items`` rows being the catalogue in ``item_idx`` order and the rest items the collaborative model does not know;
  ``content_vectors.npy`` (n, text dim) float32 unit rows, MiniLM vectors of ``text``; ``content.faiss``, their own
  inner-product index (flat or HNSW, so items added live need no rebuild); and the text encoder that serving runs on
  new items, ``text_encoder.onnx`` with its ``tokenizer.json`` (:mod:`recstack.bundle.text_encoder`).
* The TF-IDF state (optional, ``manifest.tfidf``; :mod:`recstack.bundle.tfidf`): when the retrieval vectors are a
  content model's with a TF-IDF block (``manifest.content_model``: ``encoder`` tfidf or both; a minilm or both model's
  MiniLM block is the content section's text vector, :mod:`recstack.bundle.content_encoding`), the fitted vectorizer
  as plain data, so serving encodes an item added live exactly as the model encoded the catalogue: ``tfidf.json``
  (the vocabulary, term -> column; the settings ``transform`` reads; the vector of an item without usable text) and
  ``tfidf_idf.npy`` (the idf weights, one per column).

Item-side numbers (popularity, item vectors, the ranker's item and context tables, the item-item weights) are
aggregates over every training user, erased ones included, until the model is retrained on data without them.

No pickle anywhere: arrays are read with ``allow_pickle=False``, tables are parquet, the index is FAISS's own format,
the TF-IDF vectorizer is rebuilt from JSON and an array.
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
ITEM_ITEM = "item_item.npy"
CONTENT_ITEMS = "content_items.parquet"
CONTENT_VECTORS = "content_vectors.npy"
CONTENT_INDEX = "content.faiss"
TEXT_ENCODER = "text_encoder.onnx"
TOKENIZER = "tokenizer.json"
TFIDF = "tfidf.json"
TFIDF_IDF = "tfidf_idf.npy"
CONTENT_FILES: tuple[str, ...] = (CONTENT_ITEMS, CONTENT_VECTORS, CONTENT_INDEX, TEXT_ENCODER, TOKENIZER)
CONTENT_COLUMNS: tuple[str, ...] = ("content_idx", "item_id", "title", "categories", "text", "updated_ms")
REQUIRED_FILES: tuple[str, ...] = (USERS, ITEMS, USER_EMB, ITEM_EMB, SEEN_INDPTR, SEEN_INDICES, INDEX)
ITEM_COLUMNS: tuple[str, ...] = ("item_idx", "item_id", "title", "year", "categories", "popularity")
USER_COLUMNS: tuple[str, ...] = ("user_idx", "user_id")
# The most distinct values a demographic column may have to be kept in users.parquet, and the popularity-by-segment
# fallback's limit on the columns it segments by (recstack.serving.fallbacks): more values make per-segment rankings
# noise and the column a quasi-identifier (zip codes), so a bundle never carries it.
MAX_SEGMENT_VALUES = 32


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


def segment_columns(users: pd.DataFrame, max_distinct: int = MAX_SEGMENT_VALUES) -> list[str]:
    """The demographic columns of ``users`` the segment fallback can use: at most ``max_distinct`` distinct values,
    counted as the fallback counts them (as strings, a missing value being one value, "")."""
    return [
        column
        for column in users.columns
        if column not in USER_COLUMNS and users[column].astype("string").fillna("").nunique() <= max_distinct
    ]


def minimise_users(users: pd.DataFrame) -> pd.DataFrame:
    """``users`` with only the columns a bundle keeps (:data:`USER_COLUMNS` and :func:`segment_columns`), in
    ``user_idx`` order; a new frame, the caller's is left as it was."""
    missing = [c for c in USER_COLUMNS if c not in users.columns]
    if missing:
        raise BundleError(f"{USERS}: missing column(s) {missing}; it has {list(users.columns)}")
    kept = [*USER_COLUMNS, *segment_columns(users)]
    return users.loc[:, kept].sort_values("user_idx", kind="stable").reset_index(drop=True)


def check_users(frame: pd.DataFrame, n_users: int, erased: int, what: str = USERS) -> None:
    """``users.parquet`` against the manifest: ``user_idx`` strictly ascending within 0..n_users-1 (so unique), one
    row per user but the ``erased`` ones (whose indices are holes), ``user_id`` unique."""
    missing = [c for c in USER_COLUMNS if c not in frame.columns]
    if missing:
        raise BundleError(f"{what}: missing column(s) {missing}; it has {list(frame.columns)}")
    idx = frame["user_idx"].to_numpy(np.int64)
    if len(idx) != n_users - erased:
        raise BundleError(
            f"{what}: {len(idx)} rows, expected {n_users - erased} ({n_users} users, {erased} erased at export)"
        )
    if len(idx) and (idx[0] < 0 or idx[-1] >= n_users or (np.diff(idx) <= 0).any()):
        raise BundleError(f"{what}: user_idx must be unique, ascending and within 0..{n_users - 1}")
    if frame["user_id"].duplicated().any():
        raise BundleError(f"{what}: user_id has duplicates; each user must map to one row")
