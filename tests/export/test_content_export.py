"""The next export includes the items upserted live: ``recstack-export``'s content options read them from the real
Redis, the content section holds them (catalogue rows changed in place, new items after the catalogue) with vectors
of the exported encoder, and a server of that bundle serves them without Redis, applying only later upserts."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import redis
from bundle_support import bundle_rewrite_args, write_test_bundle
from redis_support import delete_keys

from recstack.bundle.reader import Bundle
from recstack.cli.export import content_from_config
from recstack.collect.catalogue import LOG_MAXLEN, UPSERT_SCRIPT, ItemUpsert, items_key, items_log_key
from recstack.collect.records import StreamNames
from recstack.config import compose
from recstack.data.prepared import PreparedSplit
from recstack.export.content_section import build_content, content_items
from recstack.serving.live_items import LiveItems
from recstack.serving.pipeline import Pipeline

pytestmark = [pytest.mark.redis]
CACHE = Path(__file__).resolve().parents[2] / "data" / "cache" / "text"


def test_content_items_apply_upserts_in_version_order(serving_split: PreparedSplit) -> None:
    upserts = [
        ItemUpsert("new-b", "Second", ("Drama",), version="20-0"),
        ItemUpsert("i1", "Changed", ("Comedy",), ("tag",), "Desc.", version="10-0"),
        ItemUpsert("new-a", "First", (), version="10-1"),
        ItemUpsert("new-a", "First, renamed", ("Horror",), version="30-0"),
    ]
    table = content_items(serving_split.items, upserts)
    assert list(table["item_id"][:48]) == list(serving_split.items.sort_values("item_idx")["item_id"])
    assert list(table["item_id"][48:]) == ["new-a", "new-b"] and list(table["content_idx"]) == list(range(50))
    assert table.loc[1, "text"] == "Changed. Genres: Comedy. Tags: tag. Desc." and table.loc[1, "updated_ms"] == 10
    assert table.loc[48, "title"] == "First, renamed" and table.loc[48, "updated_ms"] == 30
    assert table.loc[0, "updated_ms"] == 0 and table.loc[0, "text"].startswith("Action movie 0. Genres: Action")


def test_the_next_export_serves_the_upserted_items(
    serving_split: PreparedSplit, text_encoder_dir: Path, tmp_path: Path
) -> None:
    names = StreamNames(f"recstack-test:{uuid.uuid4().hex[:10]}:collect")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        for item, title, cats in (("live-x", "Horror movie 90", "Horror"), ("i2", "Renamed", "Comedy")):
            record = ItemUpsert(item, title, (cats,))
            client.eval(UPSERT_SCRIPT, 2, items_key(names), items_log_key(names), item, record.to_json(), LOG_MAXLEN)
        node = compose(
            "export", ["run=x", "content.redis_url=redis://127.0.0.1:6379/0", f"content.stream={names.stream}"]
        )
        options = content_from_config(node.content, parity_samples=10, seed=0)
        assert options is not None and sorted(r.item_id for r in options.upserts) == ["i2", "live-x"]
        options = replace(options, cache_dir=CACHE)
        payload = build_content(serving_split.items, tmp_path / "work", options)
        assert payload.encoder.parity_samples == 10 and payload.encoder.parity_min_cosine >= 0.9999
        assert list(payload.items["item_id"][48:]) == ["live-x"] and payload.items.loc[2, "title"] == "Renamed"
        out = write_test_bundle(tmp_path / "bundle", serving_split, content_encoder=text_encoder_dir)
        bundle = Bundle.load(out)
        assert bundle.content is not None and bundle.content.info.n_items == 48  # write_test_bundle: no upserts
        # The same payload through the writer: the bundle holds the upserts, and a server of it serves them.
        from recstack.bundle.writer import write_bundle

        exported = write_bundle(
            tmp_path / "exported",
            **bundle_rewrite_args(out, model_kind="mf", ranker_onnx=None, split_hash="", content=payload),
        )
        served = Bundle.load(exported)
        assert (
            served.content is not None and served.content.info.n_items == 49 and served.content.info.n_catalogue == 48
        )
        np.testing.assert_allclose(served.content.vectors, payload.vectors)
        pipeline = Pipeline.from_bundle(served)
        live = LiveItems(pipeline, served.content, served.manifest.files["text_encoder.onnx"], neighbours=5)
        assert pipeline.item_index["live-x"] == 48 and pipeline.item_titles[2] == "Renamed" and live.n_live == 1
        stored = sorted(options.upserts, key=lambda r: r.item_id)
        assert all(not live.is_newer(record) for record in stored)  # already in the bundle: not applied again
        assert live.is_newer(ItemUpsert("live-x", "Later", (), version="99999999999999-0"))
    finally:
        client.close()
        delete_keys(names.stream)
