"""A real server whose bundle re-ranks with item-item (EASE) weights, on loopback with the real Redis: its answers equal
the in-process pipeline's over the same bundle, before and after recent activity posted to /events (read back from
Redis, the history the item-item scores read), and it says which bundle and ranker it serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from item_item_support import write_item_item_bundle
from serving_support import TEST_HMAC_KEY, Server

from recstack.bundle.item_item import ItemItemRanker
from recstack.bundle.manifest import Blend
from recstack.bundle.reader import Bundle
from recstack.bundle.writer import record_blend
from recstack.collect.pseudonymise import Pseudonymiser
from recstack.data.prepared import PreparedSplit
from recstack.serving.online_store import Event, RedisOnlineStore
from recstack.serving.pipeline import Pipeline, Query
from recstack.serving.settings import ServeSettings

pytestmark = [pytest.mark.slow, pytest.mark.redis]

BLEND = 0.5
"""Strictly between 0 and 1, so both retrieval and the item-item scores decide the served order."""
CONTEXT = {"hour": 9, "dow": 2}


@pytest.fixture(scope="module")
def tiny_bundle(tiny_bundle: Path, serving_split: PreparedSplit, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with EASE's weights as its re-ranker, seen lists as deployed (``seen=all``) and a blend weight
    in its manifest. Overriding ``tiny_bundle`` here makes tests/serving/conftest.py's module ``server`` serve it."""
    out = write_item_item_bundle(tmp_path_factory.mktemp("item-item") / "ease", tiny_bundle, serving_split, seen="all")
    record_blend(out, Blend(weight=BLEND, metric="valid/ndcg@10", grid=()))
    return out


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Bundle:
    return Bundle.load(tiny_bundle)


@pytest.fixture(scope="module")
def pipeline(bundle: Bundle) -> Pipeline:
    """The in-process pipeline over the served bundle, with the service's settings (configs/serve.yaml)."""
    pipeline = Pipeline.from_bundle(bundle)
    assert isinstance(pipeline.ranker, ItemItemRanker) and pipeline.config.rerank_weight == BLEND
    return pipeline


def recommend(server: Server, user: str, k: int) -> dict:
    with server.client() as http:
        answer = http.post("/recommend", json={"user_id": user, "k": k, "context": CONTEXT})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert not body["degraded"] and body["personalised"] and len(body["items"]) == k, body
    return body


def in_process(pipeline: Pipeline, user: str, k: int, recent: list[Event] | None = None) -> tuple[list[str], list]:
    ranked = pipeline.recommend(Query(user_id=user, k=k, **CONTEXT), recent or ())
    return [str(pipeline.item_ids[i]) for i in ranked.items], ranked.scores.tolist()


def served(body: dict) -> tuple[list[str], list[float]]:
    return [i["item_id"] for i in body["items"]], [i["score"] for i in body["items"]]


def post_clicks(server: Server, user: str, items: list[str]) -> None:
    with server.client() as http:
        clicks = [{"user_id": user, "item_id": item, "event_type": "click"} for item in items]
        answer = http.post("/events", json={"events": clicks})
    assert answer.status_code == 202 and answer.json()["accepted"] == len(items), answer.text


def recent_in_redis(prefix: str, user: str) -> list[Event]:
    """The user's recent activity as the service reads it: its list in Redis, under the user's pseudonym."""
    settings = ServeSettings.compose(["bundle=unused", f"redis_prefix={prefix}"])
    store = RedisOnlineStore(settings.redis_store())
    events = store.recent(Pseudonymiser(TEST_HMAC_KEY.encode()).user(user), settings.recent_max)
    assert events is not None, "Redis unavailable"
    return events


def test_known_users_equal_the_in_process_pipeline_and_never_get_seen_items(
    server: Server, pipeline: Pipeline, bundle: Bundle
) -> None:
    for row in range(0, bundle.manifest.n_users, 3):
        user = f"u{row}"
        body = recommend(server, user, 10)
        assert body["user_source"] == "trained" and {i["stage"] for i in body["items"]} == {"rerank"}, body
        ids, scores = served(body)
        seen = {str(pipeline.item_ids[i]) for i in bundle.seen_items(row)}
        assert not seen & set(ids), user
        expected_ids, expected_scores = in_process(pipeline, user, 10)
        assert ids == expected_ids, user
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)


def test_recent_activity_joins_the_item_item_history(
    server: Server, pipeline: Pipeline, bundle: Bundle, module_prefix: str
) -> None:
    user, row, k = "u5", 5, 20
    before = recommend(server, user, k)
    # Items the user has not seen, from a group they do not prefer (users prefer items i with i % 4 == row % 4).
    seen = set(bundle.seen_items(row).tolist())
    clicked = [f"i{i}" for i in range(3, bundle.manifest.n_items, 4) if i not in seen][:3]
    post_clicks(server, user, clicked)
    recent = recent_in_redis(module_prefix, user)
    assert [e.item_id for e in recent] == clicked[::-1]  # newest first
    after = recommend(server, user, k)
    ids, scores = served(after)
    assert after["user_source"] == "trained" and not set(clicked) & set(ids)
    expected_ids, expected_scores = in_process(pipeline, user, k, recent)
    assert ids == expected_ids
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    # Not only the clicked items excluded: the trained vector (retrieval) is unchanged, so the new order is the
    # item-item scores reading the clicks.
    before_ids = [i for i in served(before)[0] if i not in clicked]
    assert ids[:10] != before_ids[:10]


def test_a_cold_user_with_recent_activity_is_reranked_by_it(
    server: Server, pipeline: Pipeline, module_prefix: str
) -> None:
    user, clicked = "ease-newcomer", ["i2", "i6", "i10"]
    assert recommend(server, user, 5)["user_source"] == "popularity"
    post_clicks(server, user, clicked)
    recent = recent_in_redis(module_prefix, user)
    body = recommend(server, user, 5)
    assert body["user_source"] == "recent_activity" and {i["stage"] for i in body["items"]} == {"rerank"}, body
    ids, scores = served(body)
    assert not set(clicked) & set(ids)
    expected_ids, expected_scores = in_process(pipeline, user, 5, recent)
    assert ids == expected_ids
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)


def test_metadata_names_the_item_item_bundle(server: Server, bundle: Bundle, tiny_bundle: Path) -> None:
    with server.client() as http:
        ready = http.get("/readyz")
        metadata = http.get("/admin/metadata")
    assert ready.status_code == 200 and ready.json()["ranker"] is True, ready.text
    assert ready.json()["ranker_kind"] == "item_item" and ready.json()["index"] == "flat", ready.text
    assert metadata.status_code == 200, metadata.text
    (arm,) = metadata.json()["arms"]
    assert arm["digest"] == bundle.manifest.digest() and Path(arm["bundle"]) == tiny_bundle.resolve()
    # Neither endpoint names the ranker's kind; the manifest of the bundle they name does.
    assert bundle.manifest.ranker is not None and bundle.manifest.ranker.kind == "item_item"
