"""The item-item ranker in a bundle: EASE's weights written, hashed, read back memory-mapped, tampering and the memory
bound refused by name, and a manifest that readers from before the ranker kind refuse rather than misread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bundle_support import random_bundle_args
from item_item_support import ease_b

from recstack.bundle.contract import RankerContract
from recstack.bundle.item_item import (
    ROWS_FACTOR,
    ItemItemRanker,
    check_item_item_bound,
    item_item_bytes,
    max_items_for,
)
from recstack.bundle.layout import ITEM_ITEM, MANIFEST, BundleError, sha256_file
from recstack.bundle.manifest import ItemItemInfo, RankerInfo
from recstack.bundle.reader import Bundle
from recstack.bundle.writer import ItemItemPayload, write_bundle
from recstack.data.prepared import PreparedSplit


def write(out: Path, split: PreparedSplit, weights: np.ndarray, *, max_memory_gb: float = 2.0, **extra) -> Path:
    return write_bundle(
        out,
        **random_bundle_args(split, "lightgcn"),
        split_hash=split.config_hash,
        item_item=ItemItemPayload(weights=weights, model="ease", params={"l2": 10.0}, max_memory_gb=max_memory_gb),
        **extra,
    )


@pytest.fixture
def weights(tiny_split: PreparedSplit) -> np.ndarray:
    return ease_b(tiny_split)


def test_written_hashed_and_read_back(tiny_split: PreparedSplit, weights: np.ndarray, tmp_path: Path) -> None:
    bundle = Bundle.load(write(tmp_path / "b", tiny_split, weights.astype(np.float64)))  # float64 in, float32 out
    ranker = bundle.manifest.ranker
    assert ranker is not None and (ranker.kind, ranker.file, ranker.contract) == ("item_item", ITEM_ITEM, None)
    assert ranker.item_item == ItemItemInfo(model="ease", nbytes=item_item_bytes(40), params={"l2": 10.0})
    assert bundle.manifest.files[ITEM_ITEM] == sha256_file(bundle.root / ITEM_ITEM)
    assert bundle.ranker_path == bundle.root / ITEM_ITEM
    assert isinstance(bundle.item_item, np.memmap) and bundle.item_item.dtype == np.float32
    np.testing.assert_array_equal(bundle.item_item, weights)
    # The onnx kind keeps the manifest it always had (no "kind" key); item_item says its kind.
    raw = json.loads((bundle.root / MANIFEST).read_text())["ranker"]
    assert raw["kind"] == "item_item" and RankerInfo.from_dict(raw) == ranker


def test_scores_are_summed_weights_from_the_history(weights: np.ndarray) -> None:
    ranker = ItemItemRanker(weights)
    history, candidates = np.array([1, 5, 9]), np.array([5, 39])
    expected = weights[[1, 5, 9]][:, [5, 39]].sum(0)
    assert ROWS_FACTOR * 2 < 40  # 40 items, 2 candidates: the 3 x 2 cells are gathered
    np.testing.assert_allclose(ranker.score(history, candidates), expected, rtol=1e-6)
    np.testing.assert_allclose(ranker.score(history, np.arange(40))[candidates], expected, rtol=1e-6)  # whole rows
    assert ranker.score(np.empty(0, np.int64), candidates).tolist() == [0.0] * 2


def test_a_tampered_matrix_is_refused(tiny_split: PreparedSplit, weights: np.ndarray, tmp_path: Path) -> None:
    out = write(tmp_path / "b", tiny_split, weights)
    changed = weights.copy()
    changed[3, 7] += 1.0
    np.save(out / ITEM_ITEM, changed, allow_pickle=False)
    with pytest.raises(BundleError, match=rf"{ITEM_ITEM}: sha256 mismatch"):
        Bundle.load(out)
    np.save(out / ITEM_ITEM, weights[:-1], allow_pickle=False)  # hashes unchecked: the shape still is
    with pytest.raises(BundleError, match=r"item_item\.npy: float32 \(39, 40\), manifest says float32 \(40, 40\)"):
        Bundle.load(out, verify=False)


def test_memory_bound_refused_by_option_name(tiny_split: PreparedSplit, weights: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"40 x 40 float32 matrix .* above item_item\.max_memory_gb=1e-06"):
        write(tmp_path / "b", tiny_split, weights, max_memory_gb=1e-6)
    assert not (tmp_path / "b").exists()
    # The default 2 GB admits what EASE's default fit bound (8 GB at 16 bytes a cell) admits: ~22,000 items.
    assert max_items_for(2.0) == 22_360
    check_item_item_bound(22_360, 2.0)
    with pytest.raises(BundleError, match=r"22,361 items .* 2\.00 GB"):
        check_item_item_bound(22_361, 2.0)


def test_one_reranker_per_bundle(tiny_split: PreparedSplit, weights: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="one re-ranker: pass ranker_onnx or item_item, not both"):
        write(tmp_path / "b", tiny_split, weights, ranker_onnx=b"never read")
    with pytest.raises(BundleError, match=r"item_item weights: shape \(40, 39\), expected \(40, 40\)"):
        write(tmp_path / "c", tiny_split, weights[:, :-1])


def test_ranker_kinds_in_the_manifest() -> None:
    info = ItemItemInfo(model="ease", nbytes=64, params={})
    with pytest.raises(ValueError, match="needs its item_item section"):
        RankerInfo(kind="item_item")
    with pytest.raises(ValueError, match="unknown"):
        RankerInfo.from_dict({"kind": "gbdt", "file": "x"})
    raw = RankerInfo(kind="item_item", item_item=info, file=ITEM_ITEM).to_dict()
    # A reader from before the kind existed parses every ranker as an ONNX contract: it finds no inputs and refuses
    # the manifest as malformed, instead of serving the matrix as an ONNX graph.
    with pytest.raises(KeyError, match="inputs"):
        RankerContract.from_dict(raw)
