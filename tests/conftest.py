"""Shared fixtures: a tiny prepared split written by hand in the prepared layout, the tiny bundle with a real ONNX
ranker built from it (serving and offline tests), and the real ML-100K split."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from bundle_support import write_test_bundle
from spark_support import SharedSpark

from recstack.data.prepared import FORMAT_VERSION, PreparedSplit

if TYPE_CHECKING:
    from recstack.data.spark_engine import SparkEngine


def data_home() -> Path:
    return Path(os.environ.get("RECSTACK_DATA_HOME", "data/raw"))


def write_tiny_split(root: Path, n_users: int = 30, n_items: int = 40, per_user: int = 10, seed: int = 0) -> Path:
    """A small random split with structure (users prefer one of four item groups), in the prepared layout."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u % 4
        pool = np.arange(n_items)
        weights = np.where(pool % 4 == group, 8.0, 1.0)
        items = rng.choice(pool, size=per_user, replace=False, p=weights / weights.sum())
        for j, i in enumerate(items):
            stage = "train" if j < per_user - 2 else ("valid" if j == per_user - 2 else "test")
            rows.append((u, int(i), 1_000_000 + 3600 * j + u, stage))
    frame = pd.DataFrame(rows, columns=["user_idx", "item_idx", "timestamp", "stage"])
    frame["user_id"] = "u" + frame["user_idx"].astype(str)
    frame["item_id"] = "i" + frame["item_idx"].astype(str)
    frame["value"] = np.float32(1.0)
    frame["event_type"] = "rating"
    frame["user_idx"] = frame["user_idx"].astype(np.int32)
    frame["item_idx"] = frame["item_idx"].astype(np.int32)
    root.mkdir(parents=True, exist_ok=True)
    cols = ["user_id", "item_id", "user_idx", "item_idx", "timestamp", "value", "event_type"]
    for stage in ("train", "valid", "test"):
        frame.loc[frame["stage"] == stage, cols].reset_index(drop=True).to_parquet(root / f"{stage}.parquet")
    genres = ["Action", "Comedy", "Drama", "Horror"]
    items = pd.DataFrame(
        {
            "item_idx": np.arange(n_items, dtype=np.int32),
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"{genres[i % 4]} movie {i}" for i in range(n_items)],
            "year": pd.array([1990 + i % 20 for i in range(n_items)], dtype="Int64"),
            "categories": [[genres[i % 4]] for i in range(n_items)],
            "text": ["" for _ in range(n_items)],
        }
    )
    items.to_parquet(root / "items.parquet")
    users = pd.DataFrame(
        {
            "user_idx": np.arange(n_users, dtype=np.int32),
            "user_id": [f"u{u}" for u in range(n_users)],
            "gender": ["M" if u % 2 else "F" for u in range(n_users)],
            "age": [str(20 + u % 5 * 10) for u in range(n_users)],
        }
    )
    users.to_parquet(root / "users.parquet")
    manifest = {
        "format_version": FORMAT_VERSION,
        "dataset": "tiny",
        "source": "tests/conftest.py",
        "config": {},
        "config_hash": "tiny0000",
        "n_users": n_users,
        "n_items": n_items,
        "counts": {s: int((frame["stage"] == s).sum()) for s in ("train", "valid", "test")},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


@pytest.fixture(scope="session")
def tiny_split_writer() -> Callable[..., Path]:
    """:func:`write_tiny_split` for tests that need another size or folder (test folders are not packages, so they
    cannot import it from here)."""
    return write_tiny_split


@pytest.fixture
def tiny_split(tmp_path: Path) -> PreparedSplit:
    return PreparedSplit.load(write_tiny_split(tmp_path / "tiny"))


@pytest.fixture(scope="session")
def serving_split(tmp_path_factory: pytest.TempPathFactory) -> PreparedSplit:
    """The tiny split the serving and offline tests share: 60 users so both genders pass the popularity segment's
    minimum of 20 users."""
    return PreparedSplit.load(write_tiny_split(tmp_path_factory.mktemp("split") / "tiny", n_users=60, n_items=48))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, serving_split: PreparedSplit) -> Path:
    """A bundle from :func:`serving_split` with a real ONNX ranker (see tests/bundle_support.py)."""
    return write_test_bundle(tmp_path_factory.mktemp("bundles") / "tiny", serving_split)


@pytest.fixture(scope="session")
def text_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM exported to ONNX (text_encoder.onnx + tokenizer.json), parity-checked on a few texts; the trace is
    cached under data/cache/text between sessions (recstack.export.text_encoder_onnx), so it costs tens of seconds
    once per machine."""
    from recstack.export.text_encoder_onnx import export_text_encoder

    texts = ["Action movie 1. Genres: Action. Year: 1991", "Comedy movie 2. Genres: Comedy", "x"]
    out = tmp_path_factory.mktemp("text-encoder")
    export_text_encoder(out, texts, cache_dir=Path(__file__).resolve().parents[1] / "data" / "cache" / "text")
    return out


@pytest.fixture(scope="session")
def ml100k_split(tmp_path_factory: pytest.TempPathFactory) -> PreparedSplit:
    """The real ML-100K, default preparation (per-user random 0.8/0.1/0.1, every rating a positive)."""
    if not (data_home() / "ml-100k").is_dir():
        pytest.fail(f"ML-100K not found under RECSTACK_DATA_HOME={data_home()} (CI sets it to ../shared/data)")
    from recstack.config import prepare_named

    return prepare_named("ml100k", "random", out_root=tmp_path_factory.mktemp("processed"))


@pytest.fixture(scope="session")
def shared_spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedSpark]:
    """One local Spark JVM for this test process (tests/spark_support.py), started by the first module that asks."""
    shared = SharedSpark(tmp_path_factory.mktemp("spark-local"))
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def spark_engine(shared_spark: SharedSpark) -> SparkEngine:
    """The process's local engine for a Spark test module, two shuffle partitions (a module may override it)."""
    return shared_spark.engine(shuffle_partitions=2)


@pytest.fixture(autouse=True)
def pseudonymisation_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with a test-only pseudonymisation key (a deployment sets its own secret; none is in the repo).
    Tests of the no-key refusal delete it."""
    key = "test-only-pseudonymisation-key-0123456789abcdef"
    monkeypatch.setenv("RECSTACK_HMAC_KEY", key)
    return key


LONGEST_FIRST = (
    "tests/auto/test_auto_provenance.py",
    "tests/training/test_ddp.py",
    "tests/data/test_spark_engine.py",
    "tests/training/test_interrupt.py",
    "tests/tuning/",
    "tests/serving/test_process_tree.py",
    "tests/serving/test_replicas.py",
    "tests/export/test_text_encoder_onnx.py",
    "tests/profiles/test_batch_realtime_equivalence.py",
)
"""Modules that take a minute or more, started first: ``make test`` runs the suite on two pytest-xdist workers, one
module per worker at a time (``--dist loadfile --no-loadscope-reorder``) in collection order, so a long module
collected last would leave one worker running it alone at the end."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the collected tests longest modules first, then the other ``slow`` modules, then the rest; within a
    module the order is unchanged (the sort is stable), so module fixtures and test order behave as without it."""
    root = Path(str(config.rootpath))
    slow_modules = {item.path for item in items if item.get_closest_marker("slow") is not None}

    def rank(item: pytest.Item) -> int:
        where = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        for position, prefix in enumerate(LONGEST_FIRST):
            if where.startswith(prefix):
                return position
        return len(LONGEST_FIRST) + (0 if item.path in slow_modules else 1)

    items.sort(key=rank)
