"""Minimisation at the door, asked of the stores afterwards: events sent with raw ids, a full IP and a browser's
User-Agent go through the collector and the real consumer; then no raw id, no full IP and no raw User-Agent is in any
Redis key or value the collector wrote, nor in any byte of the lake. Hostile ids (path traversal, SQL-ish, long) are
stored only as pseudonyms; control characters are refused."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from recstack.collect.app import build_collector
from recstack.collect.consumer import LakeConsumer
from recstack.config import collect_settings, config_dir
from recstack.data.lake import read_table

pytestmark = [pytest.mark.redis, pytest.mark.anyio]
IP = "198.51.100.234"
UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"
RAW_IDS = ["alice.raw@example.com", "../../etc/passwd", "1'; DROP TABLE events; --", "x" * 128]


async def test_no_raw_id_full_ip_or_user_agent_reaches_redis_or_the_lake(stream: str, tmp_path: Path) -> None:
    settings = collect_settings(
        [f"stream={stream}", f"recent_prefix='{stream}:recent:'", f"lake={tmp_path / 'lake'}", "ip_mode=truncate"]
    )
    collector = build_collector(settings, str(config_dir() / "mappings" / "demographics.yaml"))
    transport = httpx.ASGITransport(app=collector.app(), client=(IP, 4444))
    async with httpx.AsyncClient(transport=transport, base_url="https://shop.example", headers={"user-agent": UA}) as c:
        for raw in RAW_IDS:
            consent = {"user_id": raw, "purposes": {"analytics": True, "personalisation": True}}
            assert (await c.post("/consent", json=consent)).status_code == 200
            events = [
                {"user_id": raw, "item_id": "7", "event_type": "click"},
                {"user_id": raw, "event_type": "search", "query": "red shoes"},
                {"user_id": raw, "event_type": "profile", "age_band": "31", "country": "fr"},
            ]
            answer = await c.post("/events", json={"events": events})
            assert answer.status_code == 202 and answer.json()["accepted"] == 3
            assert (
                await c.post("/identify", json={"user_id": raw, "anonymous_id": raw[:100] + "-v"})
            ).status_code == 202
        refused = await c.post("/events", json={"user_id": "bad\x1bid", "item_id": "1", "event_type": "view"})
        assert refused.status_code == 400 and refused.json()["field"] == "user_id"

    consumer = LakeConsumer(settings, "test")
    consumer.run(max_seconds=2.0)
    events = read_table(settings.lake, "events")
    assert events.num_rows == 3 * len(RAW_IDS)
    assert set(events["ip"].to_pylist()) == {"198.51.100.0"}
    assert read_table(settings.lake, "aliases").num_rows == len(RAW_IDS)
    assert read_table(settings.lake, "audit").num_rows == len(RAW_IDS)  # one consent record each

    forbidden = [*(raw.encode() for raw in RAW_IDS), IP.encode(), b"Android 14", b"Pixel 8", UA.encode()]
    lake_bytes = b"".join(p.read_bytes() for p in Path(settings.lake).rglob("*") if p.is_file())
    client = redis.Redis()
    redis_bytes = b""
    for key in client.scan_iter(match=f"{stream}*"):
        redis_bytes += key
        kind = client.type(key)
        if kind == b"stream":
            redis_bytes += b"".join(v for _, fields in client.xrange(key) for v in fields.values())
        elif kind == b"list":
            redis_bytes += b"".join(client.lrange(key, 0, -1))
        elif kind == b"hash":
            redis_bytes += b"".join(k + v for k, v in client.hgetall(key).items())
        elif kind == b"set":
            redis_bytes += b"".join(client.smembers(key))
    for raw in forbidden:
        assert raw not in lake_bytes, raw
        assert raw not in redis_bytes, raw
    assert b"Chrome Mobile" in lake_bytes or b"mobile" in lake_bytes  # the classes are what is kept
