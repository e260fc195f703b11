"""Profile and segment fixtures: a small synthetic event lake written with the lake's own writer
(recstack.data.lake.write_rows), an item metadata CSV with categories, and a Redis namespace of the test's own.

Use ``lake_builder``: add rows with ``.event(...)`` / ``.alias(...)``, then ``.write()``; ``.root`` is the lake,
``.items_path`` the CSV, ``AS_OF`` a fixed "now" (times are given as offsets before it, so hour and day boundaries are
exact)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from profiles_support import REDIS_URL, LakeBuilder, write_items
from redis_support import delete_keys

from recstack.collect.records import StreamNames


@pytest.fixture
def lake_builder(tmp_path: Path) -> LakeBuilder:
    root = tmp_path / "lake"
    root.mkdir()
    return LakeBuilder(root=root, items_path=write_items(tmp_path / "items.csv"))


@pytest.fixture
def names() -> Iterator[StreamNames]:
    """A stream prefix of the test's own; every key under it is deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:10]}:collect"
    yield StreamNames(stream=prefix)
    delete_keys(prefix)


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not running at {REDIS_URL} ({exc}); start it (tests marked redis need it)")
    yield client
    client.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
