"""Impressions travel from a worker's buffer to the lake: one stream entry per flush (real Redis), stored by the real
consumer as the lake's impressions table; while Redis is away they wait, past the buffer's bound the oldest are
dropped and counted."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from recstack.collect.consumer import LakeConsumer, stream_end, wait_until_stored
from recstack.collect.settings import CollectSettings
from recstack.config import collect_settings
from recstack.data import lake
from recstack.serving.impressions import ImpressionLog, impression_row

pytestmark = pytest.mark.redis


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[CollectSettings]:
    stream = f"test:{uuid.uuid4().hex[:10]}:collect"
    yield collect_settings([f"stream={stream}", f"lake={tmp_path / 'lake'}", "flush_interval_s=0.1"])
    redis.Redis.from_url("redis://127.0.0.1:6379/0").delete(stream)


def row(i: int, arm: str | None = "a") -> dict:
    return impression_row(
        request_id=f"{i:032x}",
        user_id="u" * 32,
        anonymous=False,
        items=[f"i{i}", f"i{i + 1}"],
        scores=[0.5, 0.25],
        stage="rerank",
        user_source="trained",
        personalised=True,
        bundle="tiny@0123456789ab",
        experiment="exp" if arm else None,
        arm=arm,
    )


def test_buffered_impressions_reach_the_lake_in_one_entry_per_flush(settings: CollectSettings) -> None:
    async def send_all() -> int:
        client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        log = ImpressionLog(lambda fields: client.xadd(settings.stream, fields), flush_s=60, max_buffer=1000)
        for i in range(250):
            log.record(row(i, arm=None if i % 2 else "a"))
        sent = await log.flush()
        await client.aclose()
        return sent

    assert asyncio.run(send_all()) == 250
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    assert client.xlen(settings.stream) == 1
    end = stream_end(client, settings.names)
    consumer = LakeConsumer(settings, "test")
    worker = threading.Thread(target=consumer.run, kwargs={"max_seconds": 60})
    worker.start()
    try:
        assert end is not None and wait_until_stored(client, settings.names, end, timeout_s=60)
    finally:
        consumer.stop()
        worker.join()
    table = lake.read_table(settings.lake_path, "impressions").to_pylist()
    assert len(table) == 250
    first = next(r for r in table if r["request_id"] == f"{0:032x}")
    assert first["items"] == ["i0", "i1"] and first["scores"] == [0.5, 0.25] and first["arm"] == "a"
    assert sum(r["arm"] is None for r in table) == 125


def test_rows_wait_while_redis_is_away_and_the_oldest_are_dropped_past_the_bound() -> None:
    calls: list[int] = []
    up = False

    async def send(fields: dict) -> object:
        calls.append(1)
        return b"1-0" if up else None  # None: RedisOnlineStore.call_async's "unavailable"

    async def scenario() -> tuple[int, int, int]:
        nonlocal up
        log = ImpressionLog(send, flush_s=60, max_buffer=100, max_batch=30)
        for i in range(150):
            log.record(row(i))
        failed = await log.flush()
        pending = log.pending
        up = True
        sent = await log.flush()
        return failed, pending, sent + 1000 * log.dropped

    failed, pending, sent_and_dropped = asyncio.run(scenario())
    assert failed == 0 and pending == 100  # nothing sent, the newest 100 kept
    assert sent_and_dropped == 100 + 1000 * 50  # all kept rows sent in 4 entries once back; 50 dropped, counted
