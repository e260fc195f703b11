"""Live items in one process, on real parts: the tiny bundle with a content section encoded by the exported MiniLM
ONNX encoder, its FAISS indexes and the serving pipeline. An upserted item is retrieved for a user whose recent
activity matches its text, an update replaces its vector, catalogue items keep their trained vector, empty text and
unknown categories still work, and applying is idempotent by version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bundle_support import write_test_bundle

from recstack.bundle.reader import Bundle
from recstack.collect.catalogue import ItemUpsert
from recstack.data.prepared import PreparedSplit
from recstack.serving.live_items import LiveItems
from recstack.serving.online_store import Event
from recstack.serving.pipeline import Pipeline, PipelineConfig, Query


@pytest.fixture(scope="module")
def content_bundle(
    tmp_path_factory: pytest.TempPathFactory, serving_split: PreparedSplit, text_encoder_dir: Path
) -> Path:
    return write_test_bundle(
        tmp_path_factory.mktemp("content") / "bundle", serving_split, content_encoder=text_encoder_dir
    )


def live(bundle_dir: Path) -> LiveItems:
    bundle = Bundle.load(bundle_dir)
    assert bundle.content is not None
    pipeline = Pipeline.from_bundle(bundle, PipelineConfig(n_candidates=50, max_recent=20))
    return LiveItems(pipeline, bundle.content, bundle.manifest.files["text_encoder.onnx"], neighbours=5)


def upsert(items: LiveItems, record: ItemUpsert) -> None:
    assert items.apply(record, items.vector_for(record)) is not None


def horror_clicks() -> list[Event]:
    return [Event(f"i{i}", "click", 1.0, 1_700_000_000 + i) for i in (3, 7, 11)]  # i % 4 == 3: the Horror group


def test_bundle_exposes_its_content_section(content_bundle: Path) -> None:
    bundle = Bundle.load(content_bundle)
    content = bundle.content
    assert content is not None and content.info.n_items == content.info.n_catalogue == bundle.manifest.n_items
    assert content.vectors.shape == (48, 384) and content.index.ntotal == 48 and content.info.index.kind == "hnsw"
    np.testing.assert_allclose(np.linalg.norm(content.vectors, axis=1), 1.0, atol=1e-5)
    assert list(content.items["item_id"]) == list(bundle.items["item_id"])
    # the encoder reproduces the stored vectors of the catalogue's texts
    encoder = content.load_encoder()
    np.testing.assert_allclose(encoder.encode(content.items["text"].tolist()[:5]), content.vectors[:5], atol=1e-5)


def test_a_new_item_is_retrieved_for_a_user_whose_activity_matches_its_text(content_bundle: Path) -> None:
    items = live(content_bundle)
    record = ItemUpsert("new-horror", "Horror movie 99", ("Horror",), ("slasher",), "A night of terror.", version="5-0")
    applied = items.apply(record, items.vector_for(record))
    assert applied is not None and applied.created and applied.row == 48
    groups = [int(n[1:]) % 4 for n in applied.neighbours]
    assert groups.count(3) >= 4, applied.neighbours  # its text neighbours are the Horror movies
    answer = items.pipeline.recommend(Query(user_id="cold-user", k=5), horror_clicks())
    assert answer.user_source == "recent_activity"
    assert "new-horror" in items.pipeline.item_ids[answer.items], list(items.pipeline.item_ids[answer.items])
    # a trained Horror fan (user 3: u % 4 == 3) retrieves it too
    fan = items.pipeline.recommend(Query(user_id="u3", k=10, rerank=False), ())
    assert "new-horror" in items.pipeline.item_ids[fan.items], list(items.pipeline.item_ids[fan.items])
    # the ranker knows only the bundle's items: a live candidate is scored as their mean, never out of its contract
    reranked = items.pipeline.recommend(Query(user_id="u3", k=items.pipeline.n_items - 10, rerank=True), ())
    assert reranked.stage == "rerank" and 48 in reranked.items
    assert items.n_live == 1


def test_update_replaces_the_vector_and_catalogue_items_keep_theirs(content_bundle: Path) -> None:
    items = live(content_bundle)
    upsert(items, ItemUpsert("new-1", "Horror movie 98", ("Horror",), version="5-0"))
    upsert(items, ItemUpsert("new-1", "Comedy movie 98", ("Comedy",), version="6-0"))  # same id: an update
    pipeline = items.pipeline
    row = pipeline.item_index["new-1"]
    assert row == 49 and list(pipeline.dead_rows) == [48] and pipeline.item_titles[row] == "Comedy movie 98"
    comedy_clicks = [Event(f"i{i}", "click", 1.0, 1) for i in (1, 5, 9)]
    answer = pipeline.recommend(Query(user_id="cold", k=pipeline.n_items - 4), comedy_clicks)
    returned = list(answer.items)
    assert 48 not in returned and returned.count(49) == 1  # the dead row never comes back
    before = pipeline.item_embeddings[2].copy()
    upsert(items, ItemUpsert("i2", "Renamed", ("Comedy", "Brand-new-genre"), version="7-0"))
    assert pipeline.item_index["i2"] == 2 and pipeline.item_titles[2] == "Renamed"
    np.testing.assert_array_equal(pipeline.item_embeddings[2], before)  # the trained vector stays
    only_new = pipeline.recommend(Query(user_id="cold", k=3, include_categories=("Brand-new-genre",)), ())
    assert list(only_new.items) == [2]


def test_empty_text_gets_the_fallback_vector_and_versions_are_idempotent(content_bundle: Path) -> None:
    items = live(content_bundle)
    empty = ItemUpsert("blank", "", (), version="9-0")
    np.testing.assert_allclose(items.vector_for(empty), items.fallback)
    assert abs(float(np.linalg.norm(items.fallback)) - 1.0) < 1e-5
    assert items.apply(empty, items.vector_for(empty)) is not None
    assert items.apply(empty, items.vector_for(empty)) is None  # the same version again: nothing changes
    assert items.apply(ItemUpsert("blank", "", (), version="8-0"), items.fallback) is None  # an older one neither
    assert items.pipeline.n_items == 49 and items.index.ntotal == 49


LIGHT_PROBE = """
import json, sys
from recstack.bundle.reader import Bundle
from recstack.collect.catalogue import ItemUpsert
from recstack.serving.live_items import LiveItems
from recstack.serving.pipeline import Pipeline, Query
bundle = Bundle.load(sys.argv[1])
items = LiveItems(Pipeline.from_bundle(bundle), bundle.content, "probe")
record = ItemUpsert("probe-item", "Horror movie 77", ("Horror",), version="1-0")
items.apply(record, items.vector_for(record))
items.pipeline.recommend(Query(user_id="u3", k=3))
heavy = ("torch", "lightning", "pytorch_lightning", "transformers", "sentence_transformers")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def test_encoding_and_serving_live_items_import_no_torch_or_transformers(content_bundle: Path) -> None:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", LIGHT_PROBE, str(content_bundle)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_untrained_catalogue_items_are_served_by_content(content_bundle: Path) -> None:
    """A bundle item with no training interaction (popularity 0: e.g. a cold item of split=new_items) leaves the
    collaborative search and the ranker once content is attached, and the content stage brings it to users whose
    activity reads like it; a live item's neighbours never include it (its vector is untrained)."""
    bundle = Bundle.load(content_bundle)
    assert bundle.content is not None
    cold = 15  # i15: a Horror movie (15 % 4 == 3)
    bundle.items.loc[bundle.items["item_idx"] == cold, "popularity"] = 0
    pipeline = Pipeline.from_bundle(bundle, PipelineConfig(n_candidates=50, max_recent=20))
    assert list(pipeline.untrained_rows) == [cold] and not len(pipeline.cold_rows)
    items = LiveItems(pipeline, bundle.content, bundle.manifest.files["text_encoder.onnx"], neighbours=5)
    assert list(pipeline.cold_rows) == [cold] and not pipeline.collaborative[cold]
    answer = pipeline.recommend(Query(user_id="cold-user", k=12, rerank=False), horror_clicks())
    assert "i15" in pipeline.item_ids[answer.items], list(pipeline.item_ids[answer.items])
    # the ranker never reads a cold item's untrained weights: it is scored as the mean of the others
    assert list(pipeline._trained(np.array([cold - 1, cold, cold + 1]))) == [True, False, True]
    reranked = pipeline.recommend(Query(user_id="u3", k=10, rerank=True), ())
    assert reranked.stage == "rerank" and len(set(reranked.items.tolist())) == 10
    record = ItemUpsert("new-horror", "Horror movie 99", ("Horror",), ("slasher",), "A night of terror.", version="5-0")
    applied = items.apply(record, items.vector_for(record))
    assert applied is not None and "i15" not in applied.neighbours


def test_offline_evaluation_runs_the_pipeline_with_its_content(
    content_bundle: Path, tiny_bundle: Path, serving_split: PreparedSplit
) -> None:
    from recstack.offline.report import evaluate_bundle

    plain = evaluate_bundle(content_bundle, serving_split, "test", (10,))
    attached = evaluate_bundle(content_bundle, serving_split, "test", (10,), content=True)
    assert attached[0].info["content"] == "attached" and "content" not in plain[0].info
    # every item of the tiny split has training interactions: the content section changes no answer
    np.testing.assert_array_equal(plain[0].result.per_user.topk, attached[0].result.per_user.topk)
    with pytest.raises(ValueError, match="no content section"):
        evaluate_bundle(tiny_bundle, serving_split, "test", (10,), content=True)


def test_offline_history_is_what_the_content_stage_reads(content_bundle: Path) -> None:
    """Offline evaluation passes what is known before the judged stage as ``history``; the content stage must read
    it, never the bundle's seen lists (which hold the judged items: a cold item would be found by its own text)."""
    bundle = Bundle.load(content_bundle)
    assert bundle.content is not None
    bundle.items.loc[bundle.items["item_idx"] == 15, "popularity"] = 0
    pipeline = Pipeline.from_bundle(bundle, PipelineConfig(n_candidates=50, max_recent=20))
    pipeline.attach_content(bundle.content.vectors[: bundle.content.info.n_catalogue])
    nothing, horror = np.empty(0, np.int64), np.array([3, 7, 11], np.int64)
    for user in ("u0", "u1", "u2", "u3"):
        query = Query(user_id=user, k=20, rerank=False, exclude_seen=False)
        assert 15 not in pipeline.recommend(query, history=nothing).items  # no history: no content candidates
    assert 15 in pipeline.recommend(Query(user_id="u0", k=20, rerank=False, exclude_seen=False), history=horror).items


def test_content_trust_moves_a_cold_candidates_ranker_score_by_its_text_match(content_bundle: Path) -> None:
    """The re-ranker cannot score a cold item: at content trust 0 it gets the mean of the other candidates' ranker
    scores, at trust c that mean plus c standard deviations times its content z (so a close text match can hold a
    re-ranked slot); targeting that restricts the candidates drops the content z."""
    bundle = Bundle.load(content_bundle)
    assert bundle.content is not None
    bundle.items.loc[bundle.items["item_idx"] == 15, "popularity"] = 0  # i15: a Horror movie
    horror = np.array([3, 7, 11], np.int64)
    positions = {}
    for trust in (0.0, 1.0):
        config = PipelineConfig(n_candidates=50, max_recent=20, rerank_weight=1.0, content_trust=trust)
        pipeline = Pipeline.from_bundle(bundle, config)
        pipeline.attach_content(bundle.content.vectors[: bundle.content.info.n_catalogue])
        answer = pipeline.recommend(Query(user_id="u3", k=30, exclude_seen=False), history=horror)
        assert answer.stage == "rerank"
        ranked = answer.items.tolist()
        positions[trust] = ranked.index(15) if 15 in ranked else len(ranked)
        known = np.array([True, True, True, False])
        unknown = pipeline._unknown_scores(np.array([1.0, 2.0, 3.0], np.float32), known, np.array([0, 0, 0, 2.0]))
        assert unknown == pytest.approx([2.0 + trust * float(np.std([1.0, 2.0, 3.0])) * 2.0])
    assert positions[1.0] < positions[0.0], positions  # its text matches the history: trust moves it up
    # A bundle without a tuned trust reads 0 (the ranker's mean, as before content trust existed).
    assert Pipeline.from_bundle(bundle, PipelineConfig()).config.content_trust == 0.0


def test_content_trust_is_tuned_on_validation_where_it_judges_cold_items(
    content_bundle: Path, serving_split: PreparedSplit
) -> None:
    """With a content section and a cold item judged by the validation split, the blend tuning also picks the content
    trust on validation (at the chosen weight, ties to the smaller) and records it; without one it is left untuned."""
    from recstack.bundle.manifest import Blend
    from recstack.offline.blend import CONTENT_GRID, tune_blend_weight

    plain = tune_blend_weight(Bundle.load(content_bundle), serving_split)
    assert plain.content_trust is None and plain.content_grid == ()  # every item trained: nothing to judge
    bundle = Bundle.load(content_bundle)
    cold = int(serving_split.valid["item_idx"].value_counts().index[0])  # the item validation judges most
    bundle.items.loc[bundle.items["item_idx"] == cold, "popularity"] = 0
    tuned = tune_blend_weight(bundle, serving_split)
    assert tuned.content_trust is not None and [c for c, _ in tuned.content_grid] == list(CONTENT_GRID)
    scores = dict(tuned.content_grid)
    assert scores[tuned.content_trust] == max(scores.values())
    assert Blend.from_dict(tuned.to_dict()) == tuned and Blend.from_dict(plain.to_dict()) == plain
    with pytest.raises(ValueError, match="content_trust"):
        Blend(weight=0.5, metric="valid/ndcg@10", grid=(), content_trust=1.5)
