"""Serving fixtures: Redis key prefixes of their own, one real server per test module (the tiny bundle and its split
are in tests/conftest.py, shared with tests/offline)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from serving_support import Server, free_port, start_redis, start_server, stop_server


def _delete_prefix(prefix: str) -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of its own on the shared Redis; its keys are deleted afterwards."""
    prefix = f"recstack-test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    _delete_prefix(prefix)


@pytest.fixture(scope="module")
def module_prefix() -> Iterator[str]:
    prefix = f"recstack-test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    _delete_prefix(prefix)


def shared_redis_server(bundle: Path, prefix: str, log: Path) -> Server:
    """A real server on the shared Redis (db 0) under ``prefix``, waited on until ready. A generous Redis timeout:
    these tests expect non-degraded answers, also on a loaded machine."""
    return start_server(
        bundle, log, redis_url="redis://127.0.0.1:6379/0", redis_prefix=prefix, overrides=["redis_timeout_s=1.0"]
    )


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, module_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server per test module, on the shared Redis (db 0) with the module's own key prefix."""
    srv = shared_redis_server(tiny_bundle, module_prefix, tmp_path_factory.mktemp("server") / "bentoml.log")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def replica(tiny_bundle: Path, module_prefix: str, tmp_path_factory: pytest.TempPathFactory, server: Server):
    """A second instance with ``server``'s Redis and key prefix: the two are replicas."""
    srv = shared_redis_server(tiny_bundle, module_prefix, tmp_path_factory.mktemp("replica") / "bentoml.log")
    yield srv
    stop_server(srv)


@pytest.fixture
def private_redis() -> Iterator[int]:
    """A redis-server of the test's own (it may be shut down, paused or slowed), on a free port."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not installed (apt-get install redis-server)")
    port = free_port()
    process = start_redis(port)
    yield port
    process.kill()
    process.wait()
