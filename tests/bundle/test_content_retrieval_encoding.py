"""A content bundle rebuilds a live item's retrieval vector from its text, for every encoder (tfidf, minilm, both):
export records how (``manifest.content_model`` beside the TF-IDF state, MiniLM from the content section's encoder),
a live item whose text is a catalogue item's gets that item's exported vector, and a bundle lacking a part it needs
is refused. On the real ML-100K catalogue, the model's cached sentence-transformers vectors and the bundle's ONNX
encoder agree to the export check's cosine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bundle_support import train_tiny

from recstack.bundle.layout import TFIDF, BundleError
from recstack.bundle.manifest import BundleManifest, ContentModelInfo, check_retrieval_text
from recstack.bundle.reader import Bundle
from recstack.bundle.text_encoder import PARITY_MIN_COSINE, TextEncoder
from recstack.collect.catalogue import ItemUpsert
from recstack.data.item_text import item_text
from recstack.data.prepared import PreparedSplit
from recstack.export.content_section import ContentOptions
from recstack.export.exporter import content_parity, export_run
from recstack.retrieval.index import IndexConfig
from recstack.serving.live_items import LiveItems
from recstack.serving.pipeline import Pipeline, PipelineConfig
from recstack.training.runs import load_run

CACHE = Path(__file__).resolve().parents[2] / "data" / "cache" / "text"  # MiniLM's trace and vectors, kept between runs
FLAT = IndexConfig(kind="flat", metric="ip")
ENCODERS = ("tfidf", "minilm", "both")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_split_writer: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("content-runs")
    split = PreparedSplit.load(tiny_split_writer(root / "tiny"))
    return {
        encoder: train_tiny(
            "content",
            split,
            root,
            f"model.encoder={encoder}",
            "model.minilm_weight=0.3",
            name=encoder,
            text_cache_dir=CACHE,
        )
        for encoder in ENCODERS
    }


@pytest.fixture(scope="module")
def bundles(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each run exported with its content section (the MiniLM ONNX trace cached under data/cache/text)."""
    options = ContentOptions(index_config=FLAT, parity_samples=5, cache_dir=CACHE)
    root = tmp_path_factory.mktemp("content-bundles")
    return {
        encoder: export_run(run, root / encoder, index_config=FLAT, text=False, content=options)
        for encoder, run in runs.items()
    }


def live(bundle_dir: Path) -> LiveItems:
    bundle = Bundle.load(bundle_dir)
    pipeline = Pipeline.from_bundle(bundle, PipelineConfig(n_candidates=20, max_recent=20))
    return LiveItems.from_bundle(pipeline, bundle, neighbours=5)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def upsert(item_id: str, row: dict, version: str) -> ItemUpsert:
    return ItemUpsert(
        item_id,
        row["title"],
        tuple(row["categories"]),
        tuple(row.get("tags", ())),
        row.get("description", ""),
        row["year"],
        version=version,
    )


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_manifest_records_how_the_vectors_are_made(encoder: str, bundles: dict[str, Path]) -> None:
    m = Bundle.load(bundles[encoder]).manifest
    assert m.content_model == ContentModelInfo(encoder=encoder, minilm_weight=0.3)  # type: ignore[arg-type]
    assert m.retrieval_encoding == m.content_model and m.content is not None
    widths = {"tfidf": (m.tfidf.dim if m.tfidf else -1), "minilm": m.content.dim}
    widths["both"] = widths["tfidf"] + widths["minilm"]
    assert m.embedding_dim == widths[encoder] and (m.tfidf is None) == (encoder == "minilm")
    assert (TFIDF in m.files) == (encoder != "minilm")
    assert m.metrics["content_model_parity_min_cosine"] >= PARITY_MIN_COSINE


@pytest.mark.parametrize("encoder", ENCODERS)
def test_a_live_item_gets_its_exact_retrieval_vector(
    encoder: str, runs: dict[str, Path], bundles: dict[str, Path]
) -> None:
    """A live item whose text is catalogue item 7's gets item 7's exported vector; a text no catalogue item has (an
    unknown category: the TF-IDF fallback block) and an empty one (the fallback in every block) get the model's."""
    loaded = load_run(runs[encoder])
    items = live(bundles[encoder])
    pipeline = items.pipeline
    exported = pipeline.item_embeddings[: pipeline.n_ranked].copy()
    twin = loaded.split.items.sort_values("item_idx").iloc[7].to_dict()
    unseen = {"title": "Zzz qqq", "categories": ["Brand-new-genre"], "tags": ["slasher"], "year": None}
    empty = {"title": "", "categories": [], "year": None}
    for i, row in enumerate((twin, unseen, empty)):
        record = upsert(f"new-{i}", row, version=f"{5 + i}-0")
        assert record.text == item_text(row)
        applied = items.apply(record, items.vector_for(record))
        assert applied is not None and applied.created
        got = pipeline.item_embeddings[applied.row]
        want = exported[7] if i == 0 else loaded.model.encode(pd.DataFrame([row]))[0]
        if encoder == "tfidf":
            np.testing.assert_array_equal(got, want)
        else:  # the MiniLM block: the bundle's ONNX encoder here, the model's sentence-transformers vectors there
            assert cosine(got, want) >= PARITY_MIN_COSINE, (encoder, row)
            assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5
        if encoder == "both":  # the TF-IDF columns: the same function of the same vocabulary
            assert items.tfidf is not None
            np.testing.assert_allclose(got[: items.tfidf.dim], want[: items.tfidf.dim], atol=1e-6)


def test_a_collaborative_bundle_keeps_the_neighbour_estimate(bundles: dict[str, Path]) -> None:
    """Without a content model, LiveItems estimates (an MF/LightGCN bundle): the same bundle served as if it had no
    content_model nor TF-IDF state gives the neighbours' softmax average, not the text vector."""
    bundle = Bundle.load(bundles["minilm"])
    assert bundle.content is not None
    pipeline = Pipeline.from_bundle(bundle, PipelineConfig(n_candidates=20, max_recent=20))
    items = LiveItems(pipeline, bundle.content, bundle.manifest.files["text_encoder.onnx"], neighbours=5)
    assert items.text_retrieval is None
    record = upsert("new-x", {"title": "Horror movie 3", "categories": ["Horror"], "year": 1993}, version="9-0")
    vector = items.vector_for(record)
    applied = items.apply(record, vector)
    assert applied is not None
    estimate, _ = items._estimate(vector, skip="new-x")
    np.testing.assert_allclose(pipeline.item_embeddings[applied.row], estimate, atol=1e-6)


def test_a_minilm_run_without_the_content_section_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    for encoder in ("minilm", "both"):
        with pytest.raises(BundleError, match=f"encoder={encoder}.*content section"):
            export_run(runs[encoder], tmp_path / encoder, index_config=FLAT, text=False)
        assert not (tmp_path / encoder).exists()
    # TF-IDF needs no text encoder: exported without the section, it still records how its vectors are made
    m = Bundle.load(export_run(runs["tfidf"], tmp_path / "tfidf", index_config=FLAT, text=False)).manifest
    assert m.content is None and m.content_model is not None and m.content_model.encoder == "tfidf"


def test_a_bundle_from_before_content_model_reads_as_tfidf(bundles: dict[str, Path]) -> None:
    m = Bundle.load(bundles["tfidf"]).manifest
    old = replace(m, content_model=None)
    assert "content_model" not in old.to_dict()  # such a bundle keeps the manifest, and digest, it had
    again = BundleManifest.from_json(old.to_json())
    assert again.content_model is None
    assert again.retrieval_encoding == ContentModelInfo(encoder="tfidf", minilm_weight=0.0)
    minilm = Bundle.load(bundles["minilm"]).manifest
    assert replace(minilm, content_model=None).retrieval_encoding is None  # would be estimated, as before


@pytest.mark.parametrize(
    ("encoder", "tfidf_dim", "content_dim", "embedding_dim", "problem"),
    [
        ("minilm", None, None, 384, "content section"),
        ("both", 50, None, 434, "content section"),
        ("both", None, 384, 434, "TF-IDF state"),
        ("tfidf", None, 384, 50, "TF-IDF state"),
        ("minilm", 50, 384, 384, "no TF-IDF block"),
        ("both", 50, 384, 384, "434-d vectors"),
        ("tfidf", 50, None, 51, "50-d vectors"),
    ],
)
def test_missing_or_misfit_parts_are_refused(
    encoder: str, tfidf_dim: int | None, content_dim: int | None, embedding_dim: int, problem: str
) -> None:
    info = ContentModelInfo(encoder=encoder, minilm_weight=0.5)  # type: ignore[arg-type]
    with pytest.raises(BundleError, match=problem):
        check_retrieval_text(info, tfidf_dim, content_dim, embedding_dim, "manifest.json")


def test_the_manifest_refuses_a_both_bundle_without_its_content_section(bundles: dict[str, Path]) -> None:
    m = Bundle.load(bundles["both"]).manifest
    with pytest.raises(BundleError, match="content section"):
        BundleManifest.from_json(replace(m, content=None).to_json())


@pytest.mark.slow
def test_minilm_parity_on_ml100k_items(ml100k_split: PreparedSplit, text_encoder_dir: Path) -> None:
    """The MiniLM block of a content model (:func:`~recstack.models.text_encoder.encode_items`, sentence-transformers
    vectors cached on disk; every ML-100K item has a title, so no fallback row) against the bundle's ONNX encoder on
    the same :func:`item_text`, for a seeded sample of real ML-100K items: export's check (:func:`content_parity`)
    passes at the documented cosine."""
    from recstack.models.text_encoder import encode_items

    catalogue = ml100k_split.items.sort_values("item_idx").reset_index(drop=True)
    rows = np.sort(np.random.default_rng(0).choice(len(catalogue), 300, replace=False))
    items = catalogue.iloc[rows].reset_index(drop=True)
    texts = [item_text(row) for row in items.to_dict("records")]
    assert all(texts)
    model_vectors = encode_items(items, cache_dir=CACHE, progress=False)
    onnx = TextEncoder(text_encoder_dir / "text_encoder.onnx", text_encoder_dir / "tokenizer.json").encode(texts)
    info = ContentModelInfo(encoder="minilm", minilm_weight=0.5)
    assert content_parity(info, None, items, model_vectors, onnx) >= PARITY_MIN_COSINE
