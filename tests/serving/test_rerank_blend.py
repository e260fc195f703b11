"""The re-ranker's blend weight: tuned on validation, recorded in the manifest, read by the pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from recstack.data.prepared import PreparedSplit
from recstack.export.bundle import Bundle
from recstack.export.rerank_blend import DEFAULT_GRID, record_blend_weight, tune_blend_weight
from recstack.serving.pipeline import Pipeline, PipelineConfig, offline_topk


def test_tuned_weight_is_the_best_on_validation_and_serving_reads_it(
    tiny_bundle: Path, serving_split: PreparedSplit, tmp_path: Path
) -> None:
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle_dir)
    tuning = tune_blend_weight(Bundle.load(bundle_dir), serving_split)
    assert set(tuning.scores) == set(DEFAULT_GRID)
    assert tuning.scores[tuning.weight] == max(tuning.scores.values())

    record_blend_weight(bundle_dir, tuning)
    reloaded = Bundle.load(bundle_dir)  # the manifest edit keeps every hashed file intact
    assert reloaded.manifest.ranker["blend_weight"] == tuning.weight
    assert Pipeline.from_bundle(reloaded).config.rerank_weight == tuning.weight
    # An explicit weight in the config wins over the manifest.
    assert Pipeline.from_bundle(reloaded, PipelineConfig(rerank_weight=0.5)).config.rerank_weight == 0.5


def test_weight_zero_keeps_the_retrieval_order(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    users = np.arange(min(10, len(bundle.user_embeddings)))
    retrieval = offline_topk(Pipeline.from_bundle(bundle), users, 5, rerank=False)
    blended = offline_topk(Pipeline.from_bundle(bundle, PipelineConfig(rerank_weight=0.0)), users, 5, rerank=True)
    np.testing.assert_array_equal(retrieval, blended)


def test_evaluate_bundle_scores_retrieval_and_rerank_on_the_same_users(
    tiny_bundle: Path, serving_split: PreparedSplit
) -> None:
    from recstack.evaluation.served_pipeline import evaluate_bundle

    retrieval, reranked = evaluate_bundle(tiny_bundle, serving_split, "test", (5, 10), name="tiny")
    assert (retrieval.name, reranked.name) == ("tiny: retrieval", "tiny: retrieval + re-rank")
    assert retrieval.result.n_users_evaluated == reranked.result.n_users_evaluated > 0
    # Validation items are masked on test, as the full-ranking evaluator masks them for a model.
    valid = serving_split.matrix("valid")
    for user, row in zip(retrieval.result.per_user.users, retrieval.result.per_user.topk, strict=True):
        assert not set(row[row >= 0]) & set(valid.indices[valid.indptr[user] : valid.indptr[user + 1]])
