"""The artifact bundle: written atomically, read back exactly, and every kind of tampering is caught by name."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recstack.bundle.layout import ITEM_EMB, MANIFEST, BundleError, sha256_file
from recstack.bundle.manifest import FORMAT_VERSION, Blend, BundleManifest
from recstack.bundle.reader import Bundle
from recstack.bundle.writer import record_blend, write_bundle
from recstack.data.prepared import PreparedSplit
from recstack.retrieval.index import IndexConfig


def bundle_inputs(split: PreparedSplit, dim: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    items = split.items.copy()
    items["popularity"] = split.item_popularity
    return dict(
        model_kind="mf",
        users=split.users,
        items=items,
        user_embeddings=rng.standard_normal((split.n_users, dim)).astype(np.float32),
        item_embeddings=rng.standard_normal((split.n_items, dim)).astype(np.float32),
        seen=split.matrix("train"),
        item_text_embeddings=rng.standard_normal((split.n_items, 384)).astype(np.float32),
        dataset=split.dataset,
        split_hash=split.config_hash,
        metrics={"val/ndcg@10": np.float32(0.25)},
    )


@pytest.fixture
def bundle_dir(tiny_split: PreparedSplit, tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "bundle", index_config=IndexConfig(kind="hnsw"), **bundle_inputs(tiny_split))


def test_round_trip(tiny_split: PreparedSplit, bundle_dir: Path) -> None:
    inputs = bundle_inputs(tiny_split)
    bundle = Bundle.load(bundle_dir)
    m = bundle.manifest
    assert (m.format_version, m.model_kind, m.embedding_dim, m.n_users, m.n_items) == (FORMAT_VERSION, "mf", 8, 30, 40)
    assert m.text_dim == 384 and m.ranker is None and m.split_hash == "tiny0000"
    assert m.metrics == {"val/ndcg@10": pytest.approx(0.25)}
    assert (m.index.kind, m.index.factory) == ("hnsw", "HNSW32,Flat") and "numpy" in m.versions
    assert MANIFEST not in m.files and len(m.files) == 8
    np.testing.assert_array_equal(bundle.user_embeddings, inputs["user_embeddings"])
    np.testing.assert_array_equal(bundle.item_embeddings, inputs["item_embeddings"])
    assert bundle.item_embeddings.flags.c_contiguous and bundle.item_embeddings.dtype == np.float32
    assert (bundle.seen != inputs["seen"]).nnz == 0
    assert bundle.user_index["u3"] == 3 and bundle.item_index["i7"] == 7
    assert list(bundle.items["categories"].iloc[1]) == ["Comedy"]
    assert bundle.items["popularity"].dtype == np.int64
    np.testing.assert_array_equal(bundle.seen_items(0), np.sort(tiny_split.train.query("user_idx == 0")["item_idx"]))
    _, ids = bundle.index.search(bundle.user_embeddings[:3], 5, [bundle.seen_items(u) for u in range(3)])
    for u in range(3):
        assert not np.isin(ids[u], bundle.seen_items(u)).any()
    assert not list(bundle_dir.parent.glob(".bundle.tmp-*"))  # the temporary folder was renamed away


def test_same_inputs_give_identical_search_results(tiny_split: PreparedSplit, tmp_path: Path) -> None:
    results = []
    for name in ("a", "b"):
        path = write_bundle(tmp_path / name, index_config={"kind": "hnsw"}, **bundle_inputs(tiny_split))
        bundle = Bundle.load(path)
        results.append(bundle.index.search(bundle.user_embeddings, 10))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], results[1][0])


def test_without_text_embeddings(tiny_split: PreparedSplit, tmp_path: Path) -> None:
    inputs = bundle_inputs(tiny_split) | {"item_text_embeddings": None}
    bundle = Bundle.load(write_bundle(tmp_path / "b", index_config={"kind": "flat"}, **inputs))
    assert bundle.item_text_embeddings is None and bundle.manifest.text_dim is None


def test_index_params_override(bundle_dir: Path) -> None:
    assert Bundle.load(bundle_dir, index_params={"ef_search": 300}).index.config.ef_search == 300
    with pytest.raises(BundleError, match="unknown"):
        Bundle.load(bundle_dir, index_params={"efSearch": 3})


def test_edited_byte_is_a_sha_mismatch_naming_the_file(bundle_dir: Path) -> None:
    path = bundle_dir / ITEM_EMB
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"item_embeddings\.npy: sha256 mismatch, manifest expects [0-9a-f]{64}"):
        Bundle.load(bundle_dir)
    Bundle.load(bundle_dir, verify=False)  # shapes still agree: only the hash can see this


@pytest.mark.parametrize("name", ["items.faiss", "users.parquet", "item_text_embeddings.npy", MANIFEST])
def test_missing_file_is_named(bundle_dir: Path, name: str) -> None:
    (bundle_dir / name).unlink()
    with pytest.raises(BundleError, match=re.escape(name) + ": missing"):
        Bundle.load(bundle_dir)


def edit_manifest(bundle_dir: Path, **changes) -> None:
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    raw.update(changes)
    (bundle_dir / MANIFEST).write_text(json.dumps(raw))


def test_edited_manifest_is_a_digest_mismatch(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, n_items=41)
    with pytest.raises(
        BundleError,
        match=r"manifest\.json: digest mismatch, manifest records [0-9a-f]{64}, its content hashes to [0-9a-f]{64}",
    ):
        Bundle.load(bundle_dir)


def test_dimension_mismatch_is_named(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, embedding_dim=16)
    with pytest.raises(BundleError, match=r"user_embeddings\.npy: dimension mismatch, shape \(30, 8\), .* \(30, 16\)"):
        Bundle.load(bundle_dir, verify=False)  # without the digest check: the shapes still give it away


def test_text_dimension_mismatch_is_named(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, text_dim=768)
    with pytest.raises(BundleError, match=r"item_text_embeddings\.npy: dimension mismatch"):
        Bundle.load(bundle_dir, verify=False)


def test_unknown_format_version(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, format_version=FORMAT_VERSION + 1)
    with pytest.raises(BundleError, match=rf"format_version {FORMAT_VERSION + 1} is unknown"):
        Bundle.load(bundle_dir)


def test_older_format_version_says_export_again(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, format_version=1)
    with pytest.raises(
        BundleError, match=r"format_version 1 was written by an older recstack.*export the bundle again"
    ):
        Bundle.load(bundle_dir)


def test_blend_needs_a_ranker_and_a_weight_from_its_grid(bundle_dir: Path) -> None:
    blend = Blend(weight=0.3, metric="valid/ndcg@10", grid=((0.0, 0.1), (0.3, 0.2), (1.0, 0.15)))
    with pytest.raises(BundleError, match="no ranker"):  # the fixture bundle has none
        record_blend(bundle_dir, blend)
    with pytest.raises(ValueError, match="not one of the grid"):
        Blend(weight=0.5, metric="valid/ndcg@10", grid=((0.0, 0.1),))


def test_pickled_array_is_refused(bundle_dir: Path) -> None:
    path = bundle_dir / ITEM_EMB
    np.save(path, np.array([{"evil": 1}] * 40, dtype=object), allow_pickle=True)
    # A manifest made consistent with the swapped file (hash and digest): only the pickle refusal is left to catch it.
    m = BundleManifest.from_json((bundle_dir / MANIFEST).read_text())
    (bundle_dir / MANIFEST).write_text(replace(m, files=m.files | {ITEM_EMB: sha256_file(path)}).to_json())
    with pytest.raises(BundleError, match="without pickle"):
        Bundle.load(bundle_dir)


def test_bad_inputs_are_refused(tiny_split: PreparedSplit, tmp_path: Path) -> None:
    inputs = bundle_inputs(tiny_split)
    with pytest.raises(BundleError, match="item_embeddings: shape"):
        write_bundle(tmp_path / "x", index_config={}, **(inputs | {"item_embeddings": np.zeros((40, 4))}))
    with pytest.raises(BundleError, match="popularity"):
        write_bundle(tmp_path / "x", index_config={}, **(inputs | {"items": tiny_split.items}))
    other = tmp_path / "not_a_bundle"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="is not a bundle"):
        write_bundle(other, index_config={}, **inputs)
    assert (other / "notes.txt").exists()


def test_rewrite_replaces_existing_bundle(tiny_split: PreparedSplit, bundle_dir: Path) -> None:
    write_bundle(bundle_dir, index_config={"kind": "flat"}, **bundle_inputs(tiny_split, seed=1))
    assert Bundle.load(bundle_dir).manifest.index.factory == "Flat"
    assert sorted(p.name for p in bundle_dir.parent.iterdir()) == ["bundle", "tiny"]


def test_manifest_json_round_trip(bundle_dir: Path) -> None:
    manifest = Bundle.load(bundle_dir).manifest
    assert BundleManifest.from_json(manifest.to_json()) == manifest


def test_bundle_package_never_imports_torch(bundle_dir: Path) -> None:
    code = (
        "import sys; import recstack.bundle.layout, recstack.bundle.contract, recstack.bundle.manifest, "
        "recstack.bundle.writer, recstack.bundle.session; from recstack.bundle.reader import Bundle; "
        f"Bundle.load({str(bundle_dir)!r}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'pytorch_lightning') "
        "or m.startswith(('recstack.models', 'recstack.training', 'recstack.export'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_pandas_frame_untouched(tiny_split: PreparedSplit, tmp_path: Path) -> None:
    inputs = bundle_inputs(tiny_split)
    before = inputs["items"].copy()
    write_bundle(tmp_path / "b", index_config={"kind": "flat"}, **inputs)
    pd.testing.assert_frame_equal(inputs["items"], before)
