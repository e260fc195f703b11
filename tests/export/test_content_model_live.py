"""A content (TF-IDF) bundle encodes live items with its own TF-IDF vocabulary: export writes the fitted vectorizer as
plain data (``tfidf.json``, ``tfidf_idf.npy``), rebuilt it reproduces every catalogue item's vector, a new item upserted
live gets exactly the model's vector of its text as its retrieval vector, and a changed or missing file is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_exporter import train_tiny  # tests/export is on sys.path (pytest prepend import mode)

from recstack.bundle.layout import TFIDF, TFIDF_IDF, BundleError
from recstack.bundle.reader import Bundle
from recstack.bundle.tfidf import TfidfEncoder
from recstack.collect.catalogue import ItemUpsert
from recstack.data.item_text import item_text
from recstack.data.prepared import PreparedSplit
from recstack.export.content_section import ContentOptions
from recstack.export.exporter import export_run
from recstack.retrieval.index import IndexConfig
from recstack.serving.live_items import LiveItems
from recstack.serving.pipeline import Pipeline, PipelineConfig
from recstack.training.runs import load_run

CACHE = Path(__file__).resolve().parents[2] / "data" / "cache" / "text"
FLAT = IndexConfig(kind="flat", metric="ip")


@pytest.fixture(scope="module")
def content_runs(tmp_path_factory: pytest.TempPathFactory, tiny_split_writer: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("content-runs")
    split = PreparedSplit.load(tiny_split_writer(root / "tiny"))
    return {"content": train_tiny("content", split, root)}


@pytest.fixture(scope="module")
def content_bundle(content_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The content run exported with a content section (MiniLM ONNX, the trace cached under data/cache/text)."""
    options = ContentOptions(index_config=FLAT, parity_samples=5, cache_dir=CACHE)
    out = tmp_path_factory.mktemp("content-bundle") / "bundle"
    return export_run(content_runs["content"], out, index_config=FLAT, text=False, content=options)


def live(bundle_dir: Path) -> LiveItems:
    bundle = Bundle.load(bundle_dir)
    assert bundle.content is not None
    pipeline = Pipeline.from_bundle(bundle, PipelineConfig(n_candidates=20, max_recent=20))
    return LiveItems.from_bundle(pipeline, bundle, neighbours=5)


def test_the_bundles_tfidf_files_rebuild_the_catalogues_vectors(
    content_runs: dict[str, Path], content_bundle: Path
) -> None:
    bundle = Bundle.load(content_bundle)
    m = bundle.manifest
    assert m.tfidf is not None and (m.tfidf.file, m.tfidf.idf_file) == (TFIDF, TFIDF_IDF)
    assert {TFIDF, TFIDF_IDF} <= set(m.files) and m.tfidf.dim == m.embedding_dim
    raw = json.loads((content_bundle / TFIDF).read_text())  # plain data: no pickle anywhere
    assert raw["settings"]["sublinear_tf"] is True and "the" in raw["settings"]["stop_words"]
    assert bundle.tfidf is not None
    split = load_run(content_runs["content"]).split
    texts = [item_text(row) for row in split.items.sort_values("item_idx").to_dict("records")]
    np.testing.assert_allclose(TfidfEncoder(bundle.tfidf).encode(texts), bundle.item_embeddings, atol=1e-6)


def test_a_new_live_item_gets_the_models_tfidf_vector(content_runs: dict[str, Path], content_bundle: Path) -> None:
    model = load_run(content_runs["content"]).model
    items = live(content_bundle)
    assert items.tfidf is not None
    pipeline = items.pipeline
    n_bundle = pipeline.n_items
    horror = {
        "title": "Horror movie 99",
        "categories": ["Horror"],
        "tags": ["slasher"],
        "description": "Dark.",
        "year": 2001,
    }
    unknown = {"title": "Zzz qqq", "categories": ["Brand-new-genre"], "tags": [], "description": "", "year": None}
    for i, row in enumerate((horror, unknown)):
        record = ItemUpsert(
            f"new-{i}",
            row["title"],
            tuple(row["categories"]),
            tuple(row["tags"]),
            row["description"],
            row["year"],
            version=f"{5 + i}-0",
        )
        applied = items.apply(record, items.vector_for(record))
        assert applied is not None and applied.created and applied.row == n_bundle + i
        assert len(applied.neighbours) == 5  # still reported, from the MiniLM text neighbours
        expected = model.encode(pd.DataFrame([row]))[0]
        np.testing.assert_array_equal(pipeline.item_embeddings[applied.row], expected)
    # the second text has no term of the vocabulary: the model's fallback, the catalogue's mean direction
    np.testing.assert_array_equal(pipeline.item_embeddings[n_bundle + 1], items.tfidf.fallback)


def test_an_item_upserted_before_the_export_gets_the_models_tfidf_vector(
    content_runs: dict[str, Path], tmp_path: Path
) -> None:
    """The bundle's own rows after the catalogue (upserts folded into the export) are encoded the same way."""
    row = {"title": "Comedy movie 77", "categories": ["Comedy"], "tags": ["farce"], "description": "", "year": 1995}
    record = ItemUpsert("pre-1", row["title"], ("Comedy",), ("farce",), "", 1995, version="3-0")
    options = ContentOptions(index_config=FLAT, upserts=(record,), parity_samples=5, cache_dir=CACHE)
    out = export_run(content_runs["content"], tmp_path / "bundle", index_config=FLAT, text=False, content=options)
    pipeline = live(out).pipeline
    expected = load_run(content_runs["content"]).model.encode(pd.DataFrame([row]))[0]
    np.testing.assert_array_equal(pipeline.item_embeddings[pipeline.item_index["pre-1"]], expected)


@pytest.mark.parametrize(("name", "damage"), [(TFIDF, "edit"), (TFIDF_IDF, "edit"), (TFIDF_IDF, "remove")])
def test_a_changed_or_missing_tfidf_file_is_refused(
    content_bundle: Path, tmp_path: Path, name: str, damage: str
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(content_bundle, copy)
    if damage == "remove":
        (copy / name).unlink()
    else:
        with open(copy / name, "ab") as f:
            f.write(b" ")
    with pytest.raises(BundleError, match=name):
        Bundle.load(copy)


LIGHT_PROBE = """
import json, sys
from recstack.bundle.reader import Bundle
from recstack.collect.catalogue import ItemUpsert
from recstack.serving.live_items import LiveItems
from recstack.serving.pipeline import Pipeline
bundle = Bundle.load(sys.argv[1])
items = LiveItems.from_bundle(Pipeline.from_bundle(bundle), bundle)
assert items.tfidf is not None
record = ItemUpsert("probe-item", "Horror movie 77", ("Horror",), version="1-0")
items.apply(record, items.vector_for(record))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lightning", "pytorch_lightning"))))
"""


def test_encoding_live_items_with_tfidf_imports_no_torch(content_bundle: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", LIGHT_PROBE, str(content_bundle)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
