"""The re-ranker's blend weight (tuned on validation, recorded in the manifest, read by the pipeline) and the served
pipeline's offline report."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from recstack.bundle.layout import MANIFEST, BundleError
from recstack.bundle.reader import Bundle
from recstack.bundle.writer import write_bundle
from recstack.data.prepared import PreparedSplit
from recstack.offline.blend import DEFAULT_GRID, tune_and_record, tune_blend_weight
from recstack.offline.report import evaluate_bundle
from recstack.offline.topk import offline_topk
from recstack.serving.pipeline import Pipeline, PipelineConfig


def test_tuned_weight_is_the_best_on_validation_and_serving_reads_it(
    tiny_bundle: Path, serving_split: PreparedSplit, tmp_path: Path
) -> None:
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle_dir)
    tuned = tune_blend_weight(Bundle.load(bundle_dir), serving_split)
    assert set(tuned.scores) == set(DEFAULT_GRID)
    assert tuned.scores[tuned.weight] == max(tuned.scores.values())

    recorded = tune_and_record(bundle_dir, serving_split)
    assert recorded == tuned
    reloaded = Bundle.load(bundle_dir)  # digest and file hashes still verify after the sanctioned update
    assert reloaded.manifest.ranker is not None and reloaded.manifest.ranker.blend == tuned
    assert Pipeline.from_bundle(reloaded).config.rerank_weight == tuned.weight
    # An explicit weight in the config wins over the manifest.
    assert Pipeline.from_bundle(reloaded, PipelineConfig(rerank_weight=0.5)).config.rerank_weight == 0.5


def test_a_hand_edited_blend_weight_is_refused(tiny_bundle: Path, serving_split: PreparedSplit, tmp_path: Path) -> None:
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle_dir)
    tune_and_record(bundle_dir, serving_split)
    path = bundle_dir / MANIFEST
    path.write_text(path.read_text().replace('"weight": ', '"weight": 0.0, "was": ', 1))
    with pytest.raises(BundleError, match=r"manifest\.json: digest mismatch"):
        Bundle.load(bundle_dir)


def test_weight_zero_keeps_the_retrieval_order(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    users = np.arange(min(10, len(bundle.user_embeddings)))
    retrieval = offline_topk(Pipeline.from_bundle(bundle), users, 5, rerank=False)
    blended = offline_topk(Pipeline.from_bundle(bundle, PipelineConfig(rerank_weight=0.0)), users, 5, rerank=True)
    np.testing.assert_array_equal(retrieval, blended)


def test_evaluate_bundle_scores_retrieval_and_rerank_on_the_same_users(
    tiny_bundle: Path, serving_split: PreparedSplit
) -> None:
    retrieval, reranked = evaluate_bundle(tiny_bundle, serving_split, "test", (5, 10), name="tiny")
    assert (retrieval.name, reranked.name) == ("tiny: retrieval", "tiny: retrieval + re-rank")
    assert retrieval.result.n_users_evaluated == reranked.result.n_users_evaluated > 0
    # Validation items are masked on test, as the full-ranking evaluator masks them for a model.
    valid = serving_split.matrix("valid")
    for user, row in zip(retrieval.result.per_user.users, retrieval.result.per_user.topk, strict=True):
        assert not set(row[row >= 0]) & set(valid.indices[valid.indptr[user] : valid.indptr[user + 1]])


def test_report_names_the_index_kind(tiny_bundle: Path, serving_split: PreparedSplit, tmp_path: Path) -> None:
    tiny = Bundle.load(tiny_bundle)
    assert tiny.ranker_path is not None
    hnsw_dir = write_bundle(  # the same bundle with an HNSW index
        tmp_path / "hnsw",
        model_kind=tiny.manifest.model_kind,
        users=tiny.users,
        items=tiny.items,
        user_embeddings=tiny.user_embeddings,
        item_embeddings=tiny.item_embeddings,
        seen=tiny.seen,
        index_config={"kind": "hnsw"},
        ranker_onnx=tiny.ranker_path,
        split_hash=tiny.manifest.split_hash,
    )
    for bundle_dir, kind in ((tiny_bundle, "flat"), (hnsw_dir, "hnsw")):
        evaluations = evaluate_bundle(bundle_dir, serving_split, "valid", (10,))
        assert [e.info["index"] for e in evaluations] == [kind, kind]
