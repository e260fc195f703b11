"""The served text encoder, torch-free: a bundle's ``text_encoder.onnx`` run by ONNX Runtime on ids from the
``tokenizers`` library, so the service encodes new items' text without torch or sentence-transformers.

The graph (written by :mod:`recstack.export.text_encoder_onnx`) already holds the whole sentence-transformers
pipeline after the tokenizer: the transformer, mean pooling over the attention mask and L2 normalisation. Its contract:

* inputs ``input_ids`` and ``attention_mask``: int64 ``(batch, tokens)``;
* output ``embedding``: float32 ``(batch, dim)``, unit rows.

The tokenizer file beside it is saved with sentence-transformers' settings (truncation at ``max_length`` tokens, the
batch padded to its longest text), so both sides see the same token ids. Export checks parity against
sentence-transformers (cosine at least :data:`PARITY_MIN_COSINE` on catalogue texts) and records it in the manifest.

Empty text: the tokenizer still gives ``[CLS] [SEP]``, so every text gets a vector; the content section replaces the
vector of an empty text by the catalogue's mean direction (:func:`recstack.bundle.content.fallback_vector`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
EMBEDDING = "embedding"
PARITY_MIN_COSINE = 0.9999
"""The least cosine between the ONNX encoder's vector and sentence-transformers' one that export accepts."""


class TextEncoder:
    """Encode texts into unit float32 vectors with the bundle's ONNX graph and tokenizer (one session, reusable)."""

    def __init__(self, onnx_path: str | Path, tokenizer_path: str | Path, *, intra_op_threads: int = 1) -> None:
        from tokenizers import Tokenizer

        from recstack.bundle.session import make_session

        self.tokenizer = Tokenizer.from_file(os.fspath(tokenizer_path))
        self.session = make_session(onnx_path, intra_op_threads=intra_op_threads)
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        expected = {INPUT_IDS: "tensor(int64)", ATTENTION_MASK: "tensor(int64)"}
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != expected or outputs != [EMBEDDING]:
            raise ValueError(
                f"{onnx_path}: inputs {inputs} and outputs {outputs}; the text encoder contract is {expected} -> "
                f"[{EMBEDDING!r}]: export the bundle again"
            )
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit rows, in order. Batches are sorted by length first so that padding
        stays short (the vectors do not depend on it: padded positions are masked out of the mean)."""
        texts = [str(t) for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
            (vectors,) = self.session.run([EMBEDDING], {INPUT_IDS: ids, ATTENTION_MASK: mask})
            out[rows] = vectors
        return out

    def encode_one(self, text: str) -> np.ndarray:
        """One text's vector, ``(dim,)``."""
        return self.encode([text])[0]
