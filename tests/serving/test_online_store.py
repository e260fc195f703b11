"""The Redis online store against the real Redis: bounded lists, TTL, and a dead server that costs nothing."""

from __future__ import annotations

import time

import pytest
import redis
from serving_support import free_port

from recstack.serving.online_store import (
    CircuitBreaker,
    Event,
    InMemoryOnlineStore,
    RedisOnlineStore,
    RedisStoreConfig,
)

pytestmark = pytest.mark.redis


def test_record_and_read_newest_first_bounded(redis_prefix: str) -> None:
    store = RedisOnlineStore(RedisStoreConfig(key_prefix=redis_prefix, max_events=3, ttl_s=60))
    for i in range(5):
        assert store.record("u1", Event(f"i{i}", "click", 1.0, 100 + i)) == min(i + 1, 3)
    recent = store.recent("u1", 10)
    assert [e.item_id for e in recent] == ["i4", "i3", "i2"]
    assert store.recent("nobody", 10) == []
    ttl = redis.Redis.from_url("redis://127.0.0.1:6379/0").ttl(redis_prefix + "u1")
    assert 0 < ttl <= 60
    assert store.state().available
    store.close()


def test_corrupt_entries_are_skipped(redis_prefix: str) -> None:
    store = RedisOnlineStore(RedisStoreConfig(key_prefix=redis_prefix))
    store.record("u2", Event("i1", "view", 1.0, 1))
    redis.Redis.from_url("redis://127.0.0.1:6379/0").lpush(redis_prefix + "u2", b"not json")
    assert [e.item_id for e in store.recent("u2", 10)] == ["i1"]


def test_unreachable_redis_is_unavailable_fast_and_breaker_opens() -> None:
    store = RedisOnlineStore(RedisStoreConfig(url=f"redis://127.0.0.1:{free_port()}/0", backoff_s=30))
    assert store.recent("u", 5) is None
    start = time.perf_counter()
    for _ in range(100):  # circuit open: no connection attempts at all
        assert store.recent("u", 5) is None
        assert store.record("u", Event("i", "click", 1.0, 0)) is None
    assert time.perf_counter() - start < 1.0  # generous: the point is "no timeout per call", not a benchmark
    state = store.state()
    assert not state.available and state.detail


def test_breaker_probes_once_after_backoff() -> None:
    now = [0.0]
    breaker = CircuitBreaker(backoff_s=1.0, max_backoff_s=4.0, clock=lambda: now[0])
    assert breaker.allow()
    breaker.failure(OSError("down"))
    assert not breaker.allow()
    now[0] = 1.5
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one
    breaker.failure(OSError("still down"))  # back-off doubles
    now[0] = 3.0
    assert not breaker.allow()
    now[0] = 3.6
    assert breaker.allow()
    breaker.success()
    assert breaker.allow() and not breaker.is_open


def test_in_memory_store_same_protocol() -> None:
    store = InMemoryOnlineStore(max_events=2)
    store.extend("u", [Event("a", "view", 1.0, 1), Event("b", "view", 1.0, 2), Event("c", "view", 1.0, 3)])
    assert [e.item_id for e in store.recent("u", 5) or []] == ["c", "b"]


def test_async_methods_share_the_store_and_the_breaker(redis_prefix: str) -> None:
    import asyncio

    async def scenario() -> tuple[int | None, list[str], list[Event] | None]:
        store = RedisOnlineStore(RedisStoreConfig(key_prefix=redis_prefix))
        length = await store.record_async("ua", Event("i9", "purchase", 2.0, 7))
        recent = [e.item_id for e in (await store.recent_async("ua", 5) or [])]
        await store.aclose()
        dead = RedisOnlineStore(RedisStoreConfig(url=f"redis://127.0.0.1:{free_port()}/0"))
        return length, recent, await dead.recent_async("ua", 5)

    length, recent, unavailable = asyncio.run(scenario())
    assert length == 1 and recent == ["i9"] and unavailable is None
