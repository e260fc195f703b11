"""A bundle's content section, loaded: item text vectors, their own FAISS index and the text encoder's files.

Rows ``0..n_catalogue-1`` are the collaborative catalogue (``content_idx == item_idx``); later rows are items the
collaborative model does not know (added through ``POST /items`` before the export). ``updated_ms`` says how new each
row's text is, so a server can tell whether an upsert it reads from Redis is newer than what the bundle holds.

Empty text: every item gets a vector. An item whose :func:`~recstack.data.item_text.item_text` is empty (no title,
categories, tags or description) is given :func:`fallback_vector`, the catalogue's mean direction ("an average item",
as the content model does), at export and in the service alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recstack.bundle.layout import CONTENT_COLUMNS, CONTENT_ITEMS, BundleError, check_table
from recstack.bundle.manifest import ContentInfo
from recstack.retrieval.index import RetrievalIndex


def fallback_vector(catalogue_vectors: np.ndarray) -> np.ndarray:
    """The vector of an item with no text: the normalised mean of the catalogue's vectors, float32 ``(dim,)``."""
    mean = np.asarray(catalogue_vectors, dtype=np.float64).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if not norm > 0:
        raise BundleError("content vectors average to zero: no fallback direction for items without text")
    return (mean / norm).astype(np.float32)


def check_content_items(frame: pd.DataFrame, info: ContentInfo, catalogue_ids: pd.Series) -> None:
    """``content_items.parquet`` against the manifest and the catalogue: ``content_idx`` 0..n-1, unique ids, and the
    first ``n_catalogue`` rows holding the catalogue's ids in ``item_idx`` order."""
    check_table(frame, CONTENT_COLUMNS, "content_idx", info.n_items, CONTENT_ITEMS)
    ids = frame["item_id"].astype(str)
    if ids.duplicated().any():
        raise BundleError(f"{CONTENT_ITEMS}: item_id has duplicates {sorted(ids[ids.duplicated()])[:5]}")
    head = ids.iloc[: info.n_catalogue].to_numpy()
    if info.n_catalogue != len(catalogue_ids) or not np.array_equal(head, catalogue_ids.astype(str).to_numpy()):
        raise BundleError(
            f"{CONTENT_ITEMS}: its first {info.n_catalogue} rows must be the catalogue's {len(catalogue_ids)} items in "
            "item_idx order; export the bundle again"
        )


@dataclass(frozen=True)
class ContentSection:
    """What :class:`~recstack.bundle.reader.Bundle` exposes of the content section (``index`` is ready to search)."""

    info: ContentInfo
    items: pd.DataFrame
    vectors: np.ndarray
    index: RetrievalIndex
    encoder_path: Path
    tokenizer_path: Path

    def load_encoder(self, *, intra_op_threads: int = 1):  # type: ignore[no-untyped-def]
        """The :class:`~recstack.bundle.text_encoder.TextEncoder` of this bundle (an ONNX Runtime session)."""
        from recstack.bundle.text_encoder import TextEncoder

        return TextEncoder(self.encoder_path, self.tokenizer_path, intra_op_threads=intra_op_threads)

    def fallback(self) -> np.ndarray:
        """The vector given to items without text (:func:`fallback_vector` of the catalogue rows)."""
        rows = self.vectors[: self.info.n_catalogue] if self.info.n_catalogue else self.vectors
        return fallback_vector(rows)
