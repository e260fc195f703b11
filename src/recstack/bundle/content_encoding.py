"""How a content model's retrieval vectors are made from item text: the one formula that the model
(:mod:`recstack.models.content`), export's parity check and serving's items added live
(:mod:`recstack.serving.live_items`) all run.

A content run's item vectors are its retrieval vectors, and each is a pure function of the item's
:func:`~recstack.data.item_text.item_text`, by the model's ``encoder`` (the bundle's ``manifest.content_model``,
:class:`~recstack.bundle.manifest.ContentModelInfo`):

* ``tfidf``: the TF-IDF block, the fitted vocabulary's transform (:mod:`recstack.bundle.tfidf`; ``tfidf.json`` and
  ``tfidf_idf.npy`` in the bundle);
* ``minilm``: the MiniLM block, which in a bundle is the content section's text vector (its ONNX MiniLM encoder, the
  same model, text function and L2 normalisation as the model's cached sentence-transformers vectors; export checks
  every catalogue row agrees to a cosine of at least
  :data:`~recstack.bundle.text_encoder.PARITY_MIN_COSINE`);
* ``both``: ``[sqrt(1 - w) * tfidf, sqrt(w) * minilm]`` with the model's ``minilm_weight`` w, so a row stays unit
  length and the item-item cosine is ``(1 - w) cos_tfidf + w cos_minilm``.

Every block comes in as unit rows with its fallback already given (:func:`combine_blocks` only places and weighs
them): an empty text gets the catalogue's mean direction in each block, and a text with no term of the vocabulary
gets it in the TF-IDF block (:func:`recstack.bundle.tfidf.tfidf_vectors`; the model's
:func:`~recstack.models.content.fill_empty_rows`; the content section's
:func:`~recstack.bundle.content.fallback_vector`). numpy and, for TF-IDF, scikit-learn; never torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recstack.bundle.layout import BundleError
from recstack.bundle.manifest import CONTENT_ENCODERS, ContentEncoder, ContentModelInfo
from recstack.bundle.tfidf import TfidfEncoder, TfidfState

__all__ = ["CONTENT_ENCODERS", "ContentEncoder", "ContentTextEncoder", "block_names", "combine_blocks"]

_BLOCKS: dict[str, tuple[str, ...]] = {"tfidf": ("tfidf",), "minilm": ("minilm",), "both": ("tfidf", "minilm")}


def block_names(encoder: str) -> tuple[str, ...]:
    """The blocks ``encoder`` builds, in column order."""
    if encoder not in _BLOCKS:
        raise ValueError(f"content encoder={encoder!r} is not one of {list(CONTENT_ENCODERS)}")
    return _BLOCKS[encoder]


def combine_blocks(encoder: str, minilm_weight: float, blocks: Sequence[np.ndarray]) -> np.ndarray:
    """The retrieval vectors, float32 ``(n, dim)``, from ``blocks`` (one unit-row ``(n, width)`` array per
    :func:`block_names` entry, fallbacks given; see the module docstring)."""
    names = block_names(encoder)
    if len(blocks) != len(names):
        raise ValueError(f"content encoder={encoder} takes the blocks {list(names)}, got {len(blocks)} array(s)")
    if len(blocks) == 1:
        return np.asarray(blocks[0], dtype=np.float32)
    w = minilm_weight
    return np.hstack([np.sqrt(1.0 - w) * blocks[0], np.sqrt(w) * blocks[1]]).astype(np.float32)


class ContentTextEncoder:
    """A content bundle's retrieval vector of one item from its text: the TF-IDF block encoded here from the bundle's
    state, the MiniLM block given (the item's content-section text vector), combined by :func:`combine_blocks`."""

    def __init__(self, info: ContentModelInfo, tfidf: TfidfState | None, minilm_dim: int | None) -> None:
        """``tfidf``: the bundle's TF-IDF state (needed unless ``encoder=minilm``); ``minilm_dim``: the content
        section's text vector width (needed unless ``encoder=tfidf``). :class:`BundleError` when one is missing."""
        names = block_names(info.encoder)
        if "tfidf" in names and tfidf is None:
            raise BundleError(f"a content model with encoder={info.encoder} needs the bundle's TF-IDF state")
        if "minilm" in names and minilm_dim is None:
            raise BundleError(
                f"a content model with encoder={info.encoder} needs the content section's text encoder (MiniLM)"
            )
        self.info = info
        self.tfidf = TfidfEncoder(tfidf) if "tfidf" in names and tfidf is not None else None
        widths = {"tfidf": 0 if self.tfidf is None else self.tfidf.dim, "minilm": minilm_dim or 0}
        self.minilm_dim = minilm_dim
        self.dim = sum(widths[name] for name in names)

    def encode_one(self, text: str, minilm: np.ndarray | None) -> np.ndarray:
        """The ``(dim,)`` retrieval vector of ``text`` (an :func:`~recstack.data.item_text.item_text`), whose MiniLM
        block is ``minilm`` (unit, the content fallback for an empty text; ignored by ``encoder=tfidf``)."""
        blocks = []
        for name in block_names(self.info.encoder):
            if name == "tfidf":
                assert self.tfidf is not None
                blocks.append(self.tfidf.encode([text]))
            else:
                if minilm is None or np.shape(minilm) != (self.minilm_dim,):
                    raise ValueError(f"the MiniLM block must be a ({self.minilm_dim},) vector, got {np.shape(minilm)}")
                blocks.append(np.asarray(minilm, dtype=np.float32)[None, :])
        return combine_blocks(self.info.encoder, self.info.minilm_weight, blocks)[0]
