"""Collection fixtures: a Redis Stream name of the test's own (every key under it deleted afterwards), and asyncio
for the in-process ASGI tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stream() -> Iterator[str]:
    """A stream name of its own; its keys and everything named after it (tombstones, consent, recent lists, rate
    counters) are deleted afterwards."""
    name = f"test:{uuid.uuid4().hex[:10]}:collect"
    yield name
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match=name + "*"))
    if keys:
        client.delete(*keys)
    client.close()
