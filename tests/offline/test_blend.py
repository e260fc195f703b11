"""The re-ranker's blend weight (tuned on validation, recorded in the manifest, read by the pipeline) and the served
pipeline's offline report."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from bundle_support import bundle_rewrite_args

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
    # the same bundle with an HNSW index
    hnsw_dir = write_bundle(tmp_path / "hnsw", **bundle_rewrite_args(tiny_bundle, index_config={"kind": "hnsw"}))
    for bundle_dir, kind in ((tiny_bundle, "flat"), (hnsw_dir, "hnsw")):
        evaluations = evaluate_bundle(bundle_dir, serving_split, "valid", (10,))
        assert [e.info["index"] for e in evaluations] == [kind, kind]


def folded_copy(tiny_bundle: Path, out: Path, seen: str, fold_in: bool = True) -> Path:
    """The tiny bundle rewritten with the manifest metrics ``recstack-export fold_in=<fold_in> seen=<seen>`` records
    (its vectors unchanged: what the offline evaluators judge by is the record)."""
    assert Bundle.load(tiny_bundle).ranker_path is not None
    metrics = {"export": {"seen": seen, "fold_in": fold_in}}
    return write_bundle(out, **bundle_rewrite_args(tiny_bundle, metrics=metrics))


def test_a_bundle_folded_in_over_train_valid_is_judged_on_test_only(
    tiny_bundle: Path, serving_split: PreparedSplit, tmp_path: Path
) -> None:
    bundle_dir = folded_copy(tiny_bundle, tmp_path / "folded", "train_valid")
    refused = r"folded in over the seen=train_valid interactions, which hold the valid split"
    with pytest.raises(ValueError, match=refused):
        tune_blend_weight(Bundle.load(bundle_dir), serving_split)
    with pytest.raises(ValueError, match=refused):
        tune_and_record(bundle_dir, serving_split)
    assert Bundle.load(bundle_dir).manifest.ranker.blend is None  # type: ignore[union-attr]  # nothing recorded
    with pytest.raises(ValueError, match=refused):
        evaluate_bundle(bundle_dir, serving_split, "valid", (10,))
    # On test it is judged as any bundle with the same vectors is
    got = evaluate_bundle(bundle_dir, serving_split, "test", (5, 10))
    want = evaluate_bundle(tiny_bundle, serving_split, "test", (5, 10))
    assert [e.result.metrics for e in got] == [e.result.metrics for e in want]


def test_a_bundle_folded_in_over_everything_is_judged_on_no_stage(
    tiny_bundle: Path, serving_split: PreparedSplit, tmp_path: Path
) -> None:
    bundle_dir = folded_copy(tiny_bundle, tmp_path / "folded", "all")
    with pytest.raises(ValueError, match=r"folded in over the seen=all interactions, which hold the valid split"):
        tune_blend_weight(Bundle.load(bundle_dir), serving_split)
    for stage in ("valid", "test"):
        with pytest.raises(ValueError, match=rf"seen=all interactions, which hold the {stage} split.*fold_in=false"):
            evaluate_bundle(bundle_dir, serving_split, stage, (10,))  # type: ignore[arg-type]


def test_a_bundle_not_folded_in_or_folded_over_train_is_judged_on_both(
    tiny_bundle: Path, serving_split: PreparedSplit, tmp_path: Path
) -> None:
    for name, seen, fold_in in (("train", "train", True), ("all", "all", False), ("tv", "train_valid", False)):
        bundle_dir = folded_copy(tiny_bundle, tmp_path / name, seen, fold_in)
        tune_blend_weight(Bundle.load(bundle_dir), serving_split)
        for stage in ("valid", "test"):
            assert evaluate_bundle(bundle_dir, serving_split, stage, (10,))  # type: ignore[arg-type]


def test_an_item_item_ranker_reads_what_is_known_before_the_stage(
    tiny_bundle: Path, serving_split: PreparedSplit, tmp_path: Path
) -> None:
    from item_item_support import write_item_item_bundle  # tests/ is on sys.path (pytest prepend import mode)

    bundle_dir = write_item_item_bundle(tmp_path / "ii", tiny_bundle, serving_split, seen="all")
    train = serving_split.matrix("train")
    before_test = (train + serving_split.matrix("valid")).tocsr()
    pipeline = Pipeline.from_bundle(Bundle.load(bundle_dir))
    for stage, history in (("valid", train), ("test", before_test)):
        _, reranked = evaluate_bundle(bundle_dir, serving_split, stage, (10,), name="ii")  # type: ignore[arg-type]
        assert reranked.result.per_user is not None
        users = reranked.result.per_user.users
        want = offline_topk(
            pipeline, users, 10, rerank=True, exclude_seen=False, extra_exclude=history, history=history
        )
        np.testing.assert_array_equal(reranked.result.per_user.topk, want)
    # On test, reading train alone would have ranked otherwise: the validation items are in the history
    train_only = offline_topk(
        pipeline, users, 10, rerank=True, exclude_seen=False, extra_exclude=before_test, history=train
    )
    assert not np.array_equal(train_only, want)
