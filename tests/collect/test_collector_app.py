"""The collector app in-process (httpx over ASGI) against the real Redis: validation, minimisation, consent, cookie,
pixel, identify, 503 when Redis is down."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import redis

from recstack.collect.app import PIXEL_GIF, build_collector
from recstack.collect.records import StreamNames, decode_entry, tombstone_key
from recstack.config import collect_settings, config_dir

pytestmark = [pytest.mark.redis, pytest.mark.anyio]
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile/15E148 Safari"


def make_client(stream: str, *overrides: str) -> httpx.AsyncClient:
    settings = collect_settings([f"stream={stream}", f"recent_prefix='{stream}-recent:'", *overrides])
    collector = build_collector(settings, str(config_dir() / "mappings" / "demographics.yaml"), notice=lambda: "<p>x")
    transport = httpx.ASGITransport(app=collector.app(), client=("203.0.113.77", 5000))
    return httpx.AsyncClient(transport=transport, base_url="https://shop.example", headers={"user-agent": UA})


def entries(stream: str) -> list[tuple[str, list[dict]]]:
    return [decode_entry(fields) for _, fields in redis.Redis().xrange(stream)]


async def consent(client: httpx.AsyncClient, user_id: str | None = None, analytics: bool = True) -> None:
    body: dict = {"purposes": {"analytics": analytics, "personalisation": True}}
    if user_id:
        body["user_id"] = user_id
    response = await client.post("/consent", json=body)
    assert response.status_code == 200, response.text


async def test_batch_is_minimised_and_stored_once_consented(stream: str) -> None:
    async with make_client(stream, "ip_mode=truncate") as client:
        events = [
            {"user_id": "alice@example.com", "item_id": "42", "event_type": "view", "tz_offset_min": 60},
            {"user_id": "alice@example.com", "event_type": "search", "query": "x" * 1000},
            {"user_id": "alice@example.com", "event_type": "profile", "age_band": 30, "country": "Germany"},
        ]
        refused = await client.post("/events", json={"events": events})
        assert refused.status_code == 202 and refused.json()["accepted"] == 0
        assert refused.json()["reason"] == "no_analytics_consent"
        await consent(client, "alice@example.com")
        response = await client.post(
            "/events", json={"events": events}, headers={"referer": "https://news.example/a?b"}
        )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 3
    stored = [rows for table, rows in entries(stream) if table == "events"]
    assert len(stored) == 1
    rows = stored[0]
    raw = json.dumps(rows)
    assert "alice" not in raw and "203.0.113.77" not in raw and "iPhone OS" not in raw
    assert rows[0]["ip"] == "203.0.113.0" and rows[0]["device_class"] == "mobile"
    assert rows[0]["referrer_host"] == "news.example"
    assert len(rows[1]["query"]) == 256
    assert rows[2]["age_band"] == "25-34" and rows[2]["country"] == "DE"
    assert redis.Redis().llen(f"{stream}-recent:{rows[0]['user_id']}") == 1


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        (
            {"events": [{"user_id": "u", "item_id": "1", "event_type": "view"}, {"user_id": "u", "event_type": "x"}]},
            "events[1].event_type",
            400,
        ),
        ({"events": [{"user_id": "u", "event_type": "rating", "item_id": "1", "value": 11}]}, "events[0].value", 400),
        ({"events": [{"user_id": "u", "event_type": "view", "timestamp": 4e9}]}, "events[0].timestamp", 400),
        ({"events": [{"user_id": "u", "event_type": "view", "timestamp": 100}]}, "events[0].timestamp", 400),
        ({"events": [{"user_id": "u", "event_type": "view"}] * 501}, "events", 413),
        ({"events": []}, "events", 400),
        ({"event_type": "click"}, "item_id", 400),
    ],
)
async def test_bad_input_names_the_field_and_stores_nothing(stream: str, body: dict, field: str, status: int) -> None:
    async with make_client(stream) as client:
        response = await client.post("/events", json=body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert entries(stream) == []


async def test_form_bodies_and_bad_json_are_refused(stream: str) -> None:
    async with make_client(stream) as client:
        form = await client.post("/events", data={"event_type": "view"})
        text = await client.post("/events", content=b"{nope", headers={"content-type": "application/json"})
    assert form.status_code == 415 and text.status_code == 400


async def test_pixel_sets_a_first_party_cookie_and_records_a_view(stream: str) -> None:
    async with make_client(stream) as client:
        first = await client.get("/pixel.gif", params={"e": "view", "i": "7"})
        assert first.content == PIXEL_GIF and len(first.content) == 43
        assert first.headers["cache-control"].startswith("no-store")
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "Secure" in cookie and "Max-Age=34128000" in cookie
        await consent(client)  # the cookie's visitor
        second = await client.get("/pixel.gif", params={"e": "view", "i": "7"})
        assert "set-cookie" not in second.headers  # the cookie was read back, not replaced
    tables = entries(stream)
    views = [rows for table, rows in tables if table == "events"]
    assert len(views) == 1 and views[0][0]["source"] == "pixel" and views[0][0]["anonymous"] is True


async def test_tampered_cookie_is_replaced(stream: str) -> None:
    async with make_client(stream) as client:
        client.cookies.set("rs_vid", "x" * 5000, domain="shop.example")
        response = await client.get("/pixel.gif")
    assert response.status_code == 200 and "rs_vid=" in response.headers["set-cookie"]


async def test_identify_links_the_visitor(stream: str) -> None:
    async with make_client(stream) as client:
        await client.get("/pixel.gif")
        response = await client.post("/identify", json={"user_id": "bob"})
    assert response.status_code == 202 and response.json()["linked"] is True
    aliases = [rows for table, rows in entries(stream) if table == "aliases"]
    assert len(aliases) == 1 and aliases[0][0]["user_id"] != "bob"


async def test_consent_replay_and_old_policy_are_refused(stream: str) -> None:
    async with make_client(stream) as client:
        newer = await client.post(
            "/consent", json={"user_id": "c", "purposes": {"analytics": False}, "timestamp": time.time()}
        )
        assert newer.status_code == 200
        replay = await client.post(
            "/consent", json={"user_id": "c", "purposes": {"analytics": True}, "timestamp": time.time() - 3600}
        )
        old = await client.post("/consent", json={"user_id": "c", "purposes": {}, "policy_version": "1999"})
        unknown = await client.post("/consent", json={"user_id": "c", "purposes": {"marketing": True}})
        state = (await client.get("/consent", params={"user_id": "c"})).json()
    assert replay.status_code == 409 and replay.json()["field"] == "timestamp"
    assert old.status_code == 409 and old.json()["field"] == "policy_version"
    assert unknown.status_code == 400
    assert state["purposes"] == {"analytics": False, "personalisation": False}
    audits = [rows for table, rows in entries(stream) if table == "audit"]
    assert len(audits) == 1 and audits[0][0]["subject"] != "c"


async def test_erased_subjects_are_not_stored(stream: str) -> None:
    async with make_client(stream, "consent_required=false") as client:
        body = {"user_id": "gone", "item_id": "1", "event_type": "click"}
        first = await client.post("/events", json=body)
        subject = entries(stream)[0][1][0]["user_id"]
        redis.Redis().sadd(tombstone_key(StreamNames(stream=stream)), subject)
        second = await client.post("/events", json=body)
    assert first.json()["accepted"] == 1
    assert second.json() == {"accepted": 0, "dropped": 1, "reason": "erased", "event_ids": []}


async def test_redis_down_is_a_503_with_retry_after(stream: str) -> None:
    async with make_client(stream, "redis_url=redis://127.0.0.1:1/0", "consent_required=false") as client:
        response = await client.post("/events", json={"user_id": "u", "item_id": "1", "event_type": "view"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"


async def test_erasure_tombstones_and_removes_the_online_keys(stream: str) -> None:
    async with make_client(stream) as client:
        await consent(client, "erin")
        await client.post("/events", json={"user_id": "erin", "item_id": "3", "event_type": "click"})
        subject = entries(stream)[-1][1][0]["user_id"]
        r = redis.Redis()
        assert r.exists(f"{stream}-recent:{subject}") and r.exists(f"{stream}:consent:{subject}")
        gone = await client.delete("/users/erin")
        again = await client.delete("/users/erin")  # idempotent
        unknown = await client.delete("/users/never-seen")
        after = await client.post("/events", json={"user_id": "erin", "item_id": "3", "event_type": "click"})
        bad = await client.delete("/users/a%01b")
    assert gone.status_code == again.status_code == unknown.status_code == 204
    assert r.sismember(tombstone_key(StreamNames(stream=stream)), subject)
    assert not r.exists(f"{stream}-recent:{subject}") and not r.exists(f"{stream}:consent:{subject}")
    assert after.json()["accepted"] == 0 and after.json()["reason"] == "erased"
    assert bad.status_code == 400 and bad.json()["field"] == "user_id"
    audits = [rows[0] for table, rows in entries(stream) if table == "audit"]
    assert [a["action"] for a in audits].count("erasure") == 3 and all("erin" not in str(a) for a in audits)


async def test_cors_only_for_listed_origins(stream: str) -> None:
    async with make_client(stream, "cors_origins=[https://shop.example]") as client:
        preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
        allowed = await client.options("/events", headers={"origin": "https://shop.example", **preflight})
        refused = await client.options("/events", headers={"origin": "https://evil.example", **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
