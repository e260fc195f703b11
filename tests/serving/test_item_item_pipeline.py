"""The pipeline with an item-item (EASE) re-ranker: candidates scored by ``B[history, candidates].sum(0)`` from the
bundle's seen items and the recent activity (cold users with activity too), blended like the ONNX ranker; judged
offline on the split's training items, never on a bundle's seen lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from item_item_support import ease_b, write_item_item_bundle

from recstack.bundle.reader import Bundle
from recstack.data.prepared import PreparedSplit
from recstack.offline.blend import DEFAULT_GRID, tune_and_record
from recstack.offline.report import evaluate_bundle
from recstack.offline.topk import offline_topk
from recstack.serving.online_store import Event
from recstack.serving.pipeline import Pipeline, PipelineConfig, Query


@pytest.fixture(scope="module")
def item_item_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, serving_split: PreparedSplit) -> Path:
    return write_item_item_bundle(tmp_path_factory.mktemp("item-item") / "b", tiny_bundle, serving_split)


@pytest.fixture(scope="module")
def weights(serving_split: PreparedSplit) -> np.ndarray:
    return ease_b(serving_split)


def ease_order(weights: np.ndarray, history: np.ndarray, excluded: np.ndarray, k: int) -> list[int]:
    scores = weights[history].sum(0)
    scores[excluded] = -np.inf
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


def test_known_users_are_ranked_by_their_seen_items(item_item_bundle: Path, weights: np.ndarray) -> None:
    # Weight 1 (EASE alone) over a catalogue smaller than N (every unseen item a candidate): EASE's own ranking.
    pipeline = Pipeline.from_bundle(Bundle.load(item_item_bundle), PipelineConfig(rerank_weight=1.0))
    for user in (0, 7, 33):
        seen = pipeline._seen(user)
        ranked = pipeline.recommend(Query(user_id=f"u{user}", k=8))
        assert (ranked.stage, ranked.user_source) == ("rerank", "trained")
        assert ranked.items.tolist() == ease_order(weights, seen, seen, 8)
    # Recent activity not yet in the bundle joins the history.
    recent = [Event("i3", "click", 1.0, 0), Event("i10", "view", 1.0, 0)]
    history = np.union1d(pipeline._seen(5), [3, 10])
    assert pipeline.recommend(Query(user_id="u5", k=8), recent).items.tolist() == ease_order(
        weights, history, history, 8
    )


def test_cold_users_with_recent_activity_are_reranked(
    item_item_bundle: Path, tiny_bundle: Path, weights: np.ndarray
) -> None:
    clicks = [Event(f"i{i}", "click", 1.0, 0) for i in (2, 6, 10)]
    pipeline = Pipeline.from_bundle(Bundle.load(item_item_bundle), PipelineConfig(rerank_weight=1.0))
    ranked = pipeline.recommend(Query(user_id="stranger", k=5), clicks)
    assert (ranked.stage, ranked.user_source) == ("rerank", "recent_activity")
    assert ranked.items.tolist() == ease_order(weights, np.array([2, 6, 10]), np.array([2, 6, 10]), 5)
    # The ONNX ranker leaves them in retrieval order (it knows cold users as one out-of-vocabulary row) ...
    onnx = Pipeline.from_bundle(Bundle.load(tiny_bundle)).recommend(Query(user_id="stranger", k=5), clicks)
    assert onnx.stage == "retrieval"
    # ... and with no history at all there is nothing to re-rank from: popularity.
    assert pipeline.recommend(Query(user_id="stranger", k=5)).stage == "popularity"


def test_weight_zero_is_retrieval_and_live_items_are_neutral(item_item_bundle: Path) -> None:
    bundle = Bundle.load(item_item_bundle)
    users = np.arange(10)
    retrieval = offline_topk(Pipeline.from_bundle(bundle), users, 5, rerank=False)
    blended = offline_topk(Pipeline.from_bundle(bundle, PipelineConfig(rerank_weight=0.0)), users, 5, rerank=True)
    np.testing.assert_array_equal(retrieval, blended)
    # A live item (no weights) as a candidate and in the history: scored at the others' mean, ignored as history.
    pipeline = Pipeline.from_bundle(bundle, PipelineConfig(rerank_weight=0.5))
    row = pipeline.upsert_item("new", "Live", ["Action"], bundle.item_embeddings[1] * 3)
    ranked = pipeline.recommend(Query(user_id="u1", k=10), [Event("new", "click", 1.0, 0)])
    assert ranked.stage == "rerank" and row not in ranked.items and np.isfinite(ranked.scores).all()
    scores = pipeline._rerank_item_item(np.array([0, 4, row]), np.array([1, 5, row]))
    assert scores[2] == pytest.approx(scores[:2].mean())


def test_blend_tuned_on_validation_and_judged_without_the_seen_lists(
    tiny_bundle: Path, serving_split: PreparedSplit, tmp_path: Path
) -> None:
    # A deployed bundle's seen lists hold the test items; offline, the history is the training split all the same.
    deployed = write_item_item_bundle(tmp_path / "all", tiny_bundle, serving_split, seen="all")
    trained = write_item_item_bundle(tmp_path / "train", tiny_bundle, serving_split, seen="train")
    blend = tune_and_record(deployed, serving_split)
    assert set(blend.scores) == set(DEFAULT_GRID) and blend.scores[blend.weight] == max(blend.scores.values())
    assert Pipeline.from_bundle(Bundle.load(deployed)).config.rerank_weight == blend.weight
    assert tune_and_record(trained, serving_split) == blend
    judged = [evaluate_bundle(b, serving_split, "test", (10,)) for b in (deployed, trained)]
    for retrieval, reranked in judged:
        assert reranked.info == {"index": "flat", "ranker": "item_item"} and retrieval.info == {"index": "flat"}
    np.testing.assert_array_equal(judged[0][1].result.per_user.topk, judged[1][1].result.per_user.topk)
    # Reading the deployed seen lists instead would have changed the answers (the test items in the history).
    pipeline = Pipeline.from_bundle(Bundle.load(deployed), PipelineConfig(rerank_weight=1.0))
    users, train = np.arange(serving_split.n_users), serving_split.matrix("train")
    leaky = offline_topk(pipeline, users, 10, rerank=True, exclude_seen=False, extra_exclude=train)
    honest = offline_topk(pipeline, users, 10, rerank=True, exclude_seen=False, extra_exclude=train, history=train)
    assert not np.array_equal(leaky, honest)
