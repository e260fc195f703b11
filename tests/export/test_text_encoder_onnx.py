"""MiniLM exported to ONNX (transformer + mean pooling + L2 norm in the graph, the tokenizer beside it) encodes like
sentence-transformers: cosine at least 0.9999 on 1,000 real ML-100K catalogue texts, through the torch-free serving
encoder (ONNX Runtime + tokenizers). A failed check leaves no file behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recstack.bundle.text_encoder import PARITY_MIN_COSINE, TextEncoder
from recstack.data.item_text import item_text
from recstack.data.prepared import PreparedSplit
from recstack.export.text_encoder_onnx import (
    ONNX_FILE,
    TOKENIZER_FILE,
    TextParityError,
    export_text_encoder,
)
from recstack.models.text_encoder import model_location

CACHE = Path(__file__).resolve().parents[2] / "data" / "cache" / "text"


@pytest.mark.slow
def test_onnx_text_encoder_matches_sentence_transformers_on_1000_catalogue_texts(
    ml100k_split: PreparedSplit, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    items = ml100k_split.items.sort_values("item_idx")
    texts = [item_text(row) for row in items.to_dict("records")][:1000]
    assert len(texts) == 1000 and all(texts)
    # The exporter's own check on a few of them (export checks up to parity_samples=1000 catalogue texts) ...
    report = export_text_encoder(tmp_path, texts[:20], cache_dir=CACHE)
    assert report.parity_samples == 20 and report.min_cosine >= PARITY_MIN_COSINE and report.dim == 384
    # ... and all 1,000 here, independently of it.
    expected = SentenceTransformer(model_location(), device="cpu").encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
    )
    got = TextEncoder(tmp_path / ONNX_FILE, tmp_path / TOKENIZER_FILE, intra_op_threads=0).encode(texts)
    cosine = np.sum(expected * got, axis=1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1))
    assert float(cosine.min()) >= PARITY_MIN_COSINE, float(cosine.min())
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # one text alone, a batch of mixed lengths and the empty text all get a unit vector
    np.testing.assert_allclose(
        TextEncoder(tmp_path / ONNX_FILE, tmp_path / TOKENIZER_FILE).encode_one(texts[7]), got[7], atol=1e-5
    )
    empty = TextEncoder(tmp_path / ONNX_FILE, tmp_path / TOKENIZER_FILE).encode_one("")
    assert abs(float(np.linalg.norm(empty)) - 1.0) < 1e-5


def test_a_failed_parity_check_leaves_no_encoder(text_encoder_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TextParityError, match="do not ship it"):
        export_text_encoder(tmp_path, ["Toy Story. Genres: Animation"], cache_dir=CACHE, min_cosine=1.5)
    assert not (tmp_path / ONNX_FILE).exists() and not (tmp_path / TOKENIZER_FILE).exists()
    with pytest.raises(ValueError, match="parity_texts is empty"):
        export_text_encoder(tmp_path, [], cache_dir=CACHE)
