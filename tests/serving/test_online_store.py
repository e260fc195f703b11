"""The Redis online store against the real Redis: bounded lists, TTL, a dead server that costs nothing, a bounded
pool, and a circuit breaker whose probe always resolves (cancelled, or failing in a way nobody expected)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import redis
from serving_support import free_port, start_redis

from recstack.serving.online_store import (
    CircuitBreaker,
    Event,
    InMemoryOnlineStore,
    RedisOnlineStore,
    RedisStoreConfig,
)
from recstack.serving.settings import ServeSettings

pytestmark = pytest.mark.redis

SERVE_DEFAULTS = ServeSettings.compose(["bundle=unused"]).redis_store()


def config(**overrides: Any) -> RedisStoreConfig:
    """configs/serve.yaml's store settings (the one home of the defaults), with a test's overrides."""
    return dataclasses.replace(SERVE_DEFAULTS, **overrides)


def open_breaker(breaker: CircuitBreaker, message: str = "injected") -> None:
    """Fail admitted calls until the breaker opens (its threshold in a row)."""
    while not breaker.is_open:
        ticket = breaker.allow()
        assert ticket is not None and not ticket.probe
        breaker.failure(ticket, OSError(message))


def test_record_and_read_newest_first_bounded(redis_prefix: str) -> None:
    store = RedisOnlineStore(config(key_prefix=redis_prefix, max_events=3, ttl_s=60))
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
    store = RedisOnlineStore(config(key_prefix=redis_prefix))
    store.record("u2", Event("i1", "view", 1.0, 1))
    redis.Redis.from_url("redis://127.0.0.1:6379/0").lpush(redis_prefix + "u2", b"not json")
    assert [e.item_id for e in store.recent("u2", 10)] == ["i1"]


def test_unreachable_redis_is_unavailable_fast_and_breaker_opens() -> None:
    store = RedisOnlineStore(config(url=f"redis://127.0.0.1:{free_port()}/0", backoff_s=30))
    for _ in range(SERVE_DEFAULTS.failure_threshold):
        assert store.recent("u", 5) is None
    assert store.breaker.is_open
    pool = store._client.connection_pool
    attempts = []
    real_get = pool.get_connection

    def counted(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        return real_get(*args, **kwargs)

    pool.get_connection = counted  # type: ignore[method-assign]
    for _ in range(100):  # circuit open: no connection attempts at all
        assert store.recent("u", 5) is None
        assert store.record("u", Event("i", "click", 1.0, 0)) is None
    assert attempts == []
    state = store.state()
    assert not state.available and state.detail


def test_breaker_probes_once_after_backoff() -> None:
    now = [0.0]
    breaker = CircuitBreaker(backoff_s=1.0, max_backoff_s=4.0, clock=lambda: now[0])
    first = breaker.allow()
    assert first is not None and not first.probe
    breaker.failure(first, OSError("down"))
    assert breaker.allow() is None
    now[0] = 1.5
    probe = breaker.allow()
    assert probe is not None and probe.probe
    assert breaker.allow() is None  # only one
    breaker.failure(probe, OSError("still down"))  # back-off doubles
    now[0] = 3.0
    assert breaker.allow() is None
    now[0] = 3.6
    probe = breaker.allow()
    assert probe is not None and probe.probe
    breaker.success(probe)
    assert breaker.allow() is not None and not breaker.is_open


def test_stragglers_failing_after_the_breaker_opened_do_not_extend_the_backoff() -> None:
    """8 calls admitted while closed all fail: the third opens it for backoff_s, the other five change nothing."""
    now = [0.0]
    breaker = CircuitBreaker(backoff_s=1.0, max_backoff_s=8.0, clock=lambda: now[0], failure_threshold=3)
    tickets = [breaker.allow() for _ in range(8)]
    assert all(t is not None and not t.probe for t in tickets)
    for ticket in tickets:
        breaker.failure(ticket, TimeoutError("late"))  # type: ignore[arg-type]
    assert breaker.is_open
    now[0] = 0.99
    assert breaker.allow() is None
    now[0] = 1.0  # open for exactly backoff_s, not doubled five times
    probe = breaker.allow()
    assert probe is not None and probe.probe
    breaker.failure(probe, TimeoutError("still late"))  # only the probe doubles it
    now[0] = 2.99
    assert breaker.allow() is None
    now[0] = 3.0
    assert breaker.allow() is not None


def test_only_the_probe_releases_the_probe() -> None:
    now = [0.0]
    breaker = CircuitBreaker(backoff_s=1.0, max_backoff_s=4.0, clock=lambda: now[0])
    straggler = breaker.allow()
    assert straggler is not None
    open_breaker(breaker)
    now[0] = 1.0
    probe = breaker.allow()
    assert probe is not None and probe.probe and breaker.probing
    breaker.release(straggler)  # a cancelled call admitted while closed: not the probe
    assert breaker.probing and breaker.allow() is None
    breaker.release(probe)
    assert not breaker.probing and breaker.is_open
    assert breaker.allow() is not None  # the next caller probes


def test_in_memory_store_same_protocol() -> None:
    store = InMemoryOnlineStore(max_events=2)
    store.extend("u", [Event("a", "view", 1.0, 1), Event("b", "view", 1.0, 2), Event("c", "view", 1.0, 3)])
    assert [e.item_id for e in store.recent("u", 5) or []] == ["c", "b"]


def test_async_methods_share_the_store_and_the_breaker(redis_prefix: str) -> None:
    async def scenario() -> tuple[int | None, list[str], list[Event] | None]:
        store = RedisOnlineStore(config(key_prefix=redis_prefix))
        length = await store.record_async("ua", Event("i9", "purchase", 2.0, 7))
        recent = [e.item_id for e in (await store.recent_async("ua", 5) or [])]
        await store.aclose()
        dead = RedisOnlineStore(config(url=f"redis://127.0.0.1:{free_port()}/0"))
        return length, recent, await dead.recent_async("ua", 5)

    length, recent, unavailable = asyncio.run(scenario())
    assert length == 1 and recent == ["i9"] and unavailable is None


def test_serve_yaml_is_where_the_store_defaults_live() -> None:
    from recstack.config import compose

    serve = compose("serve", ["bundle=unused"])
    assert SERVE_DEFAULTS.timeout_s == serve.redis_timeout_s
    assert SERVE_DEFAULTS.max_connections == serve.redis_max_connections
    assert SERVE_DEFAULTS.failure_threshold == serve.redis_failure_threshold
    with pytest.raises(TypeError):
        RedisStoreConfig(url="redis://127.0.0.1:6379/0")  # type: ignore[call-arg]  # no second set of defaults


def test_breaker_replaces_a_probe_older_than_its_deadline() -> None:
    now = [0.0]
    breaker = CircuitBreaker(backoff_s=1.0, max_backoff_s=4.0, probe_deadline_s=2.0, clock=lambda: now[0])
    open_breaker(breaker, "down")
    now[0] = 1.0
    assert breaker.allow() and breaker.probing  # a probe that will never report back
    now[0] = 2.5
    assert breaker.allow() is None  # still within its deadline: the others answer degraded
    now[0] = 3.1
    probe = breaker.allow()  # presumed lost: a new probe
    assert probe is not None and probe.probe
    breaker.success(probe)
    assert not breaker.is_open and not breaker.probing


def test_a_cancelled_probe_releases_the_breaker_and_the_next_one_recovers(private_redis: int) -> None:
    """The probe is in flight against a paused Redis when its request is cancelled (a client went away)."""
    url = f"redis://127.0.0.1:{private_redis}/0"

    async def scenario() -> None:
        # A long socket timeout, so that only the cancellation can end the first probe.
        store = RedisOnlineStore(config(url=url, timeout_s=10.0, backoff_s=0.0, key_prefix="cancel:"))
        assert await store.recent_async("u", 5) == []
        open_breaker(store.breaker)  # open: the next call is the probe
        redis.Redis.from_url(url).execute_command("CLIENT", "PAUSE", 3000, "ALL")
        probe = asyncio.create_task(store.recent_async("u", 5))
        while not store.breaker.probing:  # allow() ran: the probe owns the half-open state
            await asyncio.sleep(0)
        for _ in range(20):  # let it send LRANGE and block on the paused server
            await asyncio.sleep(0)
        assert not probe.done()
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert not store.breaker.probing and store.breaker.is_open  # released, no verdict on Redis
        # The next caller probes at once; it waits for the pause to end (Redis back) and closes the breaker.
        assert await store.recent_async("u", 5) == []
        assert not store.breaker.is_open
        await store.aclose()

    asyncio.run(scenario())


def test_an_unexpected_error_in_the_probe_degrades_and_recovers(redis_prefix: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        store = RedisOnlineStore(config(key_prefix=redis_prefix, backoff_s=0.0))
        client = store._async_client()
        open_breaker(store.breaker)
        real = client.lrange

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug, not a Redis error")

        monkeypatch.setattr(client, "lrange", broken)
        assert await store.recent_async("u", 5) is None  # degraded, not a 500
        assert not store.breaker.probing and "RuntimeError" in store.breaker.last_error
        monkeypatch.setattr(client, "lrange", real)
        assert await store.recent_async("u", 5) == []
        assert not store.breaker.is_open
        assert (await store.state_async()).available
        await store.aclose()

    asyncio.run(scenario())


def test_the_async_pool_is_bounded_and_waits_no_longer_than_the_timeout(private_redis: int) -> None:
    url = f"redis://127.0.0.1:{private_redis}/0"

    async def scenario() -> list[Any]:
        store = RedisOnlineStore(config(url=url, timeout_s=0.2, max_connections=2, backoff_s=30.0))
        pool = store._async_client().connection_pool
        assert isinstance(pool, redis.asyncio.BlockingConnectionPool) and pool.max_connections == 2
        redis.Redis.from_url(url).execute_command("CLIENT", "PAUSE", 60_000, "ALL")
        # 10 concurrent reads, 2 connections: 2 time out on the socket, 8 on the pool; none waits for the pause (a
        # minute: the 30 s bound is only a hang guard, and any call that waited for the pause would trip it).
        answers = await asyncio.wait_for(
            asyncio.gather(*(store.recent_async(f"u{i}", 5) for i in range(10))), timeout=30
        )
        await store.aclose()
        return answers

    assert asyncio.run(scenario()) == [None] * 10


def test_readiness_is_not_ready_while_the_breaker_is_open(redis_prefix: str) -> None:
    async def scenario() -> None:
        store = RedisOnlineStore(config(key_prefix=redis_prefix, backoff_s=30.0))
        assert (await store.state_async()).available
        open_breaker(store.breaker)
        state = await store.state_async()
        assert not state.available and "injected" in state.detail
        await store.aclose()

    asyncio.run(scenario())


def test_breaker_opens_after_threshold_failures_in_a_row_and_a_failed_probe_reopens_at_once() -> None:
    now = [0.0]
    breaker = CircuitBreaker(backoff_s=1.0, max_backoff_s=4.0, clock=lambda: now[0], failure_threshold=3)

    def fail(error: BaseException) -> None:
        ticket = breaker.allow()
        assert ticket is not None
        breaker.failure(ticket, error)

    fail(TimeoutError("late reply"))
    fail(TimeoutError("late reply"))
    ticket = breaker.allow()
    assert ticket is not None and not breaker.is_open  # two slow calls: still closed
    breaker.success(ticket)  # a success resets the count
    fail(TimeoutError("late reply"))
    fail(TimeoutError("late reply"))
    assert not breaker.is_open
    fail(ConnectionError("refused"))  # third in a row
    assert breaker.is_open and breaker.allow() is None and "refused" in breaker.last_error
    now[0] = 1.5
    fail(ConnectionError("refused"))  # the probe; half-open: one failure reopens, back-off doubled
    now[0] = 3.0
    assert breaker.allow() is None
    now[0] = 3.6
    assert breaker.allow() is not None
    with pytest.raises(ValueError):
        CircuitBreaker(backoff_s=1.0, max_backoff_s=4.0, failure_threshold=0)


def test_a_restarted_redis_costs_no_request_its_dead_pooled_sockets() -> None:
    """After a Redis restart every idle pooled socket is dead; the first call that meets one drops them all and
    retries once on a fresh connection, so no request is answered degraded once Redis is back."""
    port = free_port()
    first = start_redis(port)
    second = None
    try:

        async def scenario() -> list[list[Event] | None]:
            nonlocal second
            store = RedisOnlineStore(config(url=f"redis://127.0.0.1:{port}/0", timeout_s=2.0, key_prefix="restart:"))
            await asyncio.gather(*(store.recent_async(f"u{i}", 5) for i in range(8)))  # several pooled sockets
            first.kill()
            first.wait()
            second = start_redis(port)  # waits until the new server answers PING
            answers = [await store.recent_async(f"u{i}", 5) for i in range(8)]
            await store.aclose()
            return answers

        answers = asyncio.run(scenario())
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert answers == [[]] * 8
