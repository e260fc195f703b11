"""Simulator fixtures: two bundles of the tiny serving split whose seen lists hold train + valid (what
``recstack-export seen=train_valid`` writes, and what the offline evaluator masks on the test stage), each with a real
ONNX ranker, so the service re-ranks as the offline pipeline does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from bundle_support import export_tiny_ranker

from recstack.data.prepared import PreparedSplit


def write_sim_bundle(out: Path, split: PreparedSplit, seed: int) -> Path:
    """Group-structured embeddings (as tests/bundle_support.py's bundle), seen = train + valid, a real ONNX ranker."""
    from recstack.bundle.writer import write_bundle

    rng = np.random.default_rng(seed)
    n_users, n_items, d = split.n_users, split.n_items, 8
    groups = np.arange(n_items) % 4
    item_emb = rng.normal(0, 0.3, (n_items, d)).astype(np.float32)
    item_emb[np.arange(n_items), groups] += 1.0
    user_emb = rng.normal(0, 0.3, (n_users, d)).astype(np.float32)
    user_emb[np.arange(n_users), np.arange(n_users) % 4] += 1.0
    items = split.items[["item_idx", "item_id", "title", "year", "categories"]].copy()
    items["popularity"] = split.item_popularity.astype(np.int64)
    seen = (split.matrix("train") + split.matrix("valid")).tocsr()
    seen.data[:] = 1.0
    ranker = export_tiny_ranker(out.parent / f"{out.name}-ranker.onnx", n_users, n_items, groups, seed)
    return write_bundle(
        out,
        model_kind="mf",
        users=split.users.copy(),
        items=items,
        user_embeddings=user_emb,
        item_embeddings=item_emb,
        seen=seen,
        index_config={"kind": "flat", "metric": "ip"},
        ranker_onnx=ranker,
        dataset="tiny",
        split_hash=split.config_hash,
    )


@pytest.fixture(scope="session")
def sim_bundles(tmp_path_factory: pytest.TempPathFactory, serving_split: PreparedSplit) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sim-bundles")
    return {
        "mf": write_sim_bundle(root / "mf", serving_split, 0),
        "lgcn": write_sim_bundle(root / "lgcn", serving_split, 1),
    }


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of the test's own on the shared Redis; its keys are deleted afterwards."""
    prefix = f"recstack-test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()
