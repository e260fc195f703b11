"""The pipeline on a real bundle (FAISS index, ONNX ranker): each stage does what it says, offline and online alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from recstack.bundle.reader import Bundle
from recstack.data.prepared import PreparedSplit
from recstack.offline.topk import offline_topk
from recstack.serving.online_store import Event
from recstack.serving.pipeline import BadQuery, Pipeline, Query, UnknownItem


@pytest.fixture(scope="module")
def pipeline(tiny_bundle: Path) -> Pipeline:
    return Pipeline.from_bundle(Bundle.load(tiny_bundle))


def test_known_user_is_reranked_and_never_sees_training_items(pipeline: Pipeline) -> None:
    for user in range(pipeline.n_users):
        ranked = pipeline.recommend(Query(user_id=f"u{user}", k=10))
        assert ranked.user_source == "trained" and ranked.stage == "rerank"
        seen = pipeline.seen.indices[pipeline.seen.indptr[user] : pipeline.seen.indptr[user + 1]]
        assert len(ranked.items) == 10 and not set(ranked.items) & set(seen)
        assert np.all(np.diff(ranked.scores) <= 0)


def test_retrieval_only_and_exclude_seen_off(pipeline: Pipeline) -> None:
    ranked = pipeline.recommend(Query(user_id="u1", k=5, rerank=False))
    assert ranked.stage == "retrieval"
    # structured data: user 1 prefers item group 1
    assert all(i % 4 == 1 for i in ranked.items)
    with_seen = pipeline.recommend(Query(user_id="u1", k=40, exclude_seen=False, rerank=False))
    seen = set(pipeline.seen.indices[pipeline.seen.indptr[1] : pipeline.seen.indptr[2]])
    assert seen & set(with_seen.items)


def test_category_filters(pipeline: Pipeline) -> None:
    names = list(pipeline.category_ids)
    ranked = pipeline.recommend(Query(user_id="u1", k=5, include_categories=(names[0],)))
    assert all(pipeline.category_matrix[i, 0] for i in ranked.items) and len(ranked.items) == 5
    ranked = pipeline.recommend(Query(user_id="u1", k=5, exclude_categories=tuple(names[:3])))
    assert all(pipeline.category_matrix[i, 3] for i in ranked.items)
    with pytest.raises(BadQuery) as info:
        pipeline.recommend(Query(user_id="u1", include_categories=("Western",)))
    assert info.value.field == "include_categories"


def test_cold_users_popularity_segment_and_fold_in(pipeline: Pipeline) -> None:
    cold = pipeline.recommend(Query(user_id="stranger", k=5))
    assert cold.user_source == "popularity" and cold.stage == "popularity"
    assert list(cold.items) == list(pipeline.popularity.overall[:5])
    segment = pipeline.recommend(Query(user_id="stranger", k=5, segment=(("gender", "F"),)))
    assert segment.user_source == "segment_popularity"
    # fold-in: a stranger who clicked group-2 items gets group-2 items, and not the ones clicked
    clicks = [Event(f"i{i}", "click", 1.0, 0) for i in (2, 6, 10)]
    folded = pipeline.recommend(Query(user_id="stranger", k=5), clicks)
    assert folded.user_source == "recent_activity" and folded.stage == "retrieval"
    assert all(i % 4 == 2 for i in folded.items) and not {2, 6, 10} & set(folded.items)
    # unknown items in the activity are ignored, not errors
    assert pipeline.recommend(Query(user_id="s", k=3), [Event("nope", "view", 1.0, 0)]).user_source == "popularity"


def test_similar_items(pipeline: Pipeline) -> None:
    found = pipeline.similar("i3", 5)
    assert 3 not in found.embedding_items and len(found.embedding_items) == 5
    assert found.text_items is not None and 3 not in found.text_items
    assert all(i % 4 == 3 for i in found.embedding_items)
    with pytest.raises(UnknownItem):
        pipeline.similar("i999", 5)


def test_offline_topk_both_stages_score_with_the_evaluator(pipeline: Pipeline, serving_split: PreparedSplit) -> None:
    users = np.arange(serving_split.n_users)
    reranked = offline_topk(pipeline, users, 10, rerank=True)
    retrieval = offline_topk(pipeline, users, 10, rerank=False)
    assert reranked.shape == retrieval.shape == (len(users), 10)
    assert (reranked >= 0).all() and not np.array_equal(reranked, retrieval)
    evaluator = pytest.importorskip("recstack.evaluation.evaluator")
    for topk in (reranked, retrieval):
        result = evaluator.evaluate_topk(topk, users, serving_split, "test", (10,))
        assert 0.0 <= result.metrics["ndcg@10"] <= 1.0


def test_small_candidate_pool_still_fills_k(tiny_bundle: Path) -> None:
    from recstack.serving.pipeline import PipelineConfig

    small = Pipeline.from_bundle(Bundle.load(tiny_bundle), PipelineConfig(n_candidates=5))
    assert len(small.recommend(Query(user_id="u1", k=20)).items) == 20
    assert len(small.recommend(Query(user_id="nobody", k=20)).items) == 20


def _with_manifest_edit(tiny_bundle: Path, tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of the bundle whose manifest is edited and re-signed (so only the edit can be what is refused)."""
    import json
    import shutil

    from recstack.bundle.layout import MANIFEST
    from recstack.bundle.manifest import DIGEST_KEY, content_digest

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    raw = json.loads((copy / MANIFEST).read_text())
    raw.pop(DIGEST_KEY)
    edit(raw)
    (copy / MANIFEST).write_text(json.dumps({**raw, DIGEST_KEY: content_digest(raw)}))
    return copy


def test_a_ranker_that_does_not_match_its_recorded_contract_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    from recstack.bundle.layout import BundleError

    def rename_input(raw: dict) -> None:
        raw["ranker"]["inputs"][2]["name"] = "hour_of_day"

    with pytest.raises(BundleError, match=r"ranker\.onnx: inputs .* the ranker contract expects .*hour_of_day"):
        Pipeline.from_bundle(Bundle.load(_with_manifest_edit(tiny_bundle, tmp_path / "a", rename_input)))

    def shrink_users(raw: dict) -> None:
        raw["ranker"]["inputs"][0]["range"] = [0, 3]

    with pytest.raises(BundleError, match=r"does not fit the bundle.s .* export the bundle again"):
        Pipeline.from_bundle(Bundle.load(_with_manifest_edit(tiny_bundle, tmp_path / "b", shrink_users)))


def test_pipeline_defaults_are_serve_yaml() -> None:
    from recstack.config import compose
    from recstack.serving.pipeline import PipelineConfig

    serve = compose("serve", ["bundle=unused"])
    config = PipelineConfig()
    assert (config.n_candidates, config.max_recent) == (serve.n_candidates, serve.recent_max)
