"""Item-item (EASE) bundles from the tiny split, shared by the bundle, serving and offline tests: the same arrays as
an existing test bundle, with EASE's weights as the re-ranker instead of the ONNX one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bundle_support import bundle_rewrite_args

from recstack.bundle.reader import Bundle
from recstack.bundle.writer import ItemItemPayload, write_bundle
from recstack.data.prepared import PreparedSplit

TINY_L2 = 10.0


def ease_b(split: PreparedSplit, l2: float = TINY_L2) -> np.ndarray:
    """EASE's dense float32 weights on the split's training interactions (:func:`recstack.models.ease.ease_weights`)."""
    from recstack.models.ease import ease_weights

    return ease_weights(split.matrix("train"), l2).astype(np.float32)


def write_item_item_bundle(
    out: Path,
    source: Path,
    split: PreparedSplit,
    *,
    seen: str = "train",
    weights: np.ndarray | None = None,
    max_memory_gb: float = 2.0,
) -> Path:
    """The bundle at ``source`` rewritten with EASE's weights as its re-ranker, seen lists as ``recstack-export
    seen=<seen>`` writes them."""
    from recstack.export.exporter import seen_matrix

    return write_bundle(
        out,
        **bundle_rewrite_args(
            source,
            seen=seen_matrix(split, seen),
            item_text_embeddings=Bundle.load(source).item_text_embeddings,
            ranker_onnx=None,
            dataset="tiny",
            split_hash=split.config_hash,
        ),
        item_item=ItemItemPayload(
            weights=ease_b(split) if weights is None else weights,
            model="ease",
            params={"l2": TINY_L2, "top_k": None},
            max_memory_gb=max_memory_gb,
        ),
    )
