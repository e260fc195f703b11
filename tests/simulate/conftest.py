"""Simulator fixtures: two bundles of the tiny serving split whose seen lists hold train + valid (what
``recstack-export seen=train_valid`` writes, and what the offline evaluator masks on the test stage), each with a real
ONNX ranker, so the service re-ranks as the offline pipeline does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundle_support import write_test_bundle
from redis_support import delete_keys

from recstack.data.prepared import PreparedSplit


def write_sim_bundle(out: Path, split: PreparedSplit, seed: int) -> Path:
    """tests/bundle_support.py's bundle with wider spread around the groups, seen = train + valid, no text vectors."""
    return write_test_bundle(out, split, seed=seed, text=False, noise=0.3, seen="train_valid")


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
    delete_keys(prefix)
