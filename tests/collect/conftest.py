"""Collection fixtures: a Redis Stream name of the test's own (every key under it deleted afterwards), and asyncio
for the in-process ASGI tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from redis_support import delete_keys


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stream() -> Iterator[str]:
    """A stream name of its own; its keys and everything named after it (tombstones, consent, recent lists, rate
    counters) are deleted afterwards."""
    name = f"test:{uuid.uuid4().hex[:10]}:collect"
    yield name
    delete_keys(name)
