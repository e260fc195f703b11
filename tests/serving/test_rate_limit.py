"""Per-key and per-IP rate limits (recstack.serving.rate_limit) on the real Redis, in-process: access middleware ->
rate limiter -> a tiny Starlette app, driven through httpx's ASGI transport with chosen client addresses."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from serving_support import free_port, start_redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from recstack.serving.access import AccessMiddleware, AccessPolicy
from recstack.serving.api_keys import KeyRing, new_key, write_key_file
from recstack.serving.rate_limit import (
    EXEMPT_ROUTES,
    FAILED_OPEN,
    LIMITED,
    RateLimitMiddleware,
    RateLimitPolicy,
    client_address,
    parse_limits,
)

pytestmark = [pytest.mark.redis, pytest.mark.anyio]
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


APP = Starlette(
    routes=[
        Route(path, ok, methods=["GET", "POST"])
        for path in ("/recommend", "/events", "/demo", "/pixel.gif", "/livez", "/metrics")
    ]
)


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[KeyRing, dict[str, str]]:
    out, entries = {}, []
    for name, role in (("backend", "recommend"), ("other", "recommend"), ("site", "collect")):
        token, entry = new_key(role, name)
        out[name] = token
        entries.append(entry)
    write_key_file(tmp_path / "keys.yaml", entries)
    return KeyRing.from_file(tmp_path / "keys.yaml", reload_s=5), out


def policy(prefix: str, url: str = REDIS, **changes: object) -> RateLimitPolicy:
    values: dict = dict(
        per_key="3/minute",
        per_ip="2/minute",
        per_route_ip={"GET /pixel.gif": "4/minute"},
        ip_roles=["collect"],
        exempt=EXEMPT_ROUTES,
        lease_fraction=0.0,  # exact: one round trip per request (lease tests set their own)
        redis_url=url,
        key_prefix=prefix + "rl",
        timeout_s=1.0,  # generous: a loaded machine must not fail open by accident
        max_connections=8,
        backoff_s=0.1,
        max_backoff_s=0.5,
        failure_threshold=3,
    )
    values.update(changes)
    return RateLimitPolicy(**values)


class Stack:
    """One worker's middlewares (access, then the rate limiter) around the app."""

    def __init__(self, ring: KeyRing, limit_policy: RateLimitPolicy) -> None:
        self.outcomes: list[str] = []
        self.limiter = RateLimitMiddleware(APP, policy=limit_policy, on_outcome=self.outcomes.append)
        self.app = AccessMiddleware(self.limiter, policy=AccessPolicy(ring))

    def client(self, ip: str = "10.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
async def stack(tokens: tuple[KeyRing, dict[str, str]], redis_prefix: str) -> AsyncIterator[Stack]:
    s = Stack(tokens[0], policy(redis_prefix))
    yield s
    await s.limiter.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_429(response: httpx.Response, window_s: int) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["field"] == "rate_limit" and "retry after" in body["error"]
    assert 1 <= int(response.headers["retry-after"]) <= window_s


async def statuses(client: httpx.AsyncClient, method: str, path: str, n: int, **kw: object) -> list[int]:
    return [(await client.request(method, path, **kw)).status_code for _ in range(n)]  # type: ignore[arg-type]


async def test_per_key_limit(stack: Stack, tokens: tuple[KeyRing, dict[str, str]]) -> None:
    """A recommend key: 3 per minute wherever it comes from; another key keeps its own budget; no per-IP limit."""
    key = tokens[1]
    async with stack.client("10.0.0.1") as a, stack.client("10.0.0.2") as b:
        assert await statuses(a, "POST", "/recommend", 2, headers=bearer(key["backend"])) == [200, 200]
        assert (await b.post("/recommend", headers=bearer(key["backend"]))).status_code == 200
        assert_429(await b.post("/recommend", headers=bearer(key["backend"])), 60)
        assert_429(await a.post("/recommend", headers=bearer(key["backend"])), 60)
        # Same address, another key: its own counter (and 3 > per_ip's 2: recommend keys are not limited per IP).
        assert await statuses(a, "POST", "/recommend", 3, headers=bearer(key["other"])) == [200, 200, 200]
    assert stack.outcomes == [LIMITED, LIMITED] and stack.limiter.limited == 2


async def test_per_ip_limit(stack: Stack) -> None:
    """Without a key: 2 per minute per address; another address is not affected."""
    async with stack.client("10.0.0.1") as a, stack.client("10.0.0.2") as b:
        assert await statuses(a, "GET", "/demo", 2) == [200, 200]
        assert_429(await a.get("/demo"), 60)
        assert await statuses(b, "GET", "/demo", 2) == [200, 200]
        assert_429(await b.get("/demo"), 60)


async def test_pixel_has_its_own_per_ip_counter(stack: Stack) -> None:
    async with stack.client("10.0.0.3") as a:
        assert await statuses(a, "GET", "/demo", 3) == [200, 200, 429]
        assert await statuses(a, "GET", "/pixel.gif", 4) == [200] * 4  # not eaten by /demo's counter
        assert_429(await a.get("/pixel.gif"), 60)


async def test_collect_key_counts_per_ip_too(stack: Stack, tokens: tuple[KeyRing, dict[str, str]]) -> None:
    """A collect key is in every visitor's page: each address gets 2, the key 3 in all."""
    site = bearer(tokens[1]["site"])
    async with stack.client("10.0.1.1") as a, stack.client("10.0.1.2") as b:
        assert await statuses(a, "POST", "/events", 3, headers=site) == [200, 200, 429]  # the address's limit
        assert await statuses(b, "POST", "/events", 2, headers=site) == [200, 429]  # the key's: 3 hits so far


async def test_exempt_routes_are_never_limited(stack: Stack) -> None:
    async with stack.client("10.0.2.1") as a:
        assert await statuses(a, "GET", "/livez", 10) == [200] * 10
        assert await statuses(a, "GET", "/metrics", 10) == [200] * 10
    assert stack.outcomes == []


async def test_ipv6_counts_per_64(stack: Stack) -> None:
    async with stack.client("2001:db8:1:2::1") as a, stack.client("2001:db8:1:2:ffff::9") as b:
        assert await statuses(a, "GET", "/demo", 2) == [200, 200]
        assert_429(await b.get("/demo"), 60)  # same /64
    async with stack.client("2001:db8:1:3::1") as c:
        assert (await c.get("/demo")).status_code == 200  # another /64


def test_client_address() -> None:
    assert client_address({"client": ("192.0.2.7", 1)}) == "192.0.2.7"
    assert client_address({"client": ("::ffff:192.0.2.7", 1)}) == "192.0.2.7"
    assert client_address({"client": ("2001:db8::abcd:1", 1)}) == "2001:db8::/64"
    assert client_address({"client": None}) == "unknown"
    assert client_address({"client": ("testclient", 50000)}) == "testclient"


async def test_counters_use_limits_key_layout(
    stack: Stack, tokens: tuple[KeyRing, dict[str, str]], redis_prefix: str
) -> None:
    """limits' own FixedWindowRateLimiter reads (and could clear) the counters the script wrote."""
    async with stack.client() as a:
        await a.post("/recommend", headers=bearer(tokens[1]["backend"]))
    storage = RedisStorage("async+" + REDIS, implementation="redispy", key_prefix=redis_prefix + "rl")
    stats = await FixedWindowRateLimiter(storage).get_window_stats(parse("3/minute"), "key", "backend")
    assert stats.remaining == 2


async def test_a_counter_without_ttl_gets_one(stack: Stack, redis_prefix: str) -> None:
    """A counter left without an expiry (a crash between INCR and EXPIRE elsewhere) must not block forever."""
    key = f"{redis_prefix}rl:" + parse("2/minute").key_for("ip", "10.0.3.1")
    r = redis.Redis.from_url(REDIS)
    r.set(key, 50)
    async with stack.client("10.0.3.1") as a:
        assert_429(await a.get("/demo"), 60)
    assert 0 < r.ttl(key) <= 60
    r.close()


async def test_redis_down_fails_open_and_counts_it(tokens: tuple[KeyRing, dict[str, str]], redis_prefix: str) -> None:
    """Nothing listens on the port: every request is served, each counted as failed_open (the breaker then skips
    Redis altogether; either way no request waits on it)."""
    s = Stack(tokens[0], policy(redis_prefix, url=f"redis://127.0.0.1:{free_port()}/0"))
    async with s.client() as a:
        assert await statuses(a, "GET", "/demo", 10) == [200] * 10
        assert await statuses(a, "POST", "/recommend", 5, headers=bearer(tokens[1]["backend"])) == [200] * 5
    assert s.limiter.failed_open == 15 and s.outcomes == [FAILED_OPEN] * 15
    await s.limiter.aclose()


def test_bad_limit_strings_name_the_setting() -> None:
    with pytest.raises(ValueError, match="rate_limit_per_ip"):
        RateLimitMiddleware(APP, policy=policy("x:", per_ip="lots per second"))
    assert parse_limits("", "x") == ()
    assert [str(i) for i in parse_limits("20/second;600/minute", "x")] == ["20 per 1 second", "600 per 1 minute"]


async def test_leases_spend_locally_and_stay_within_the_limit(
    tokens: tuple[KeyRing, dict[str, str]], redis_prefix: str
) -> None:
    """100/minute leased 10 at a time: one round trip per 10 requests, and exactly 100 pass."""
    s = Stack(tokens[0], policy(redis_prefix, per_key="100/minute", lease_fraction=0.1))
    key = bearer(tokens[1]["backend"])
    async with s.client() as a:
        codes = await statuses(a, "POST", "/recommend", 25, headers=key)
        assert codes == [200] * 25 and s.limiter.round_trips == 3
        codes += await statuses(a, "POST", "/recommend", 80, headers=key)
    assert codes == [200] * 100 + [429] * 5
    assert s.limiter.round_trips == 11  # 10 leases, then one refusal remembered for the rest of the window
    await s.limiter.aclose()


async def test_concurrent_requests_share_one_lease(tokens: tuple[KeyRing, dict[str, str]], redis_prefix: str) -> None:
    """16 requests at once on a 10-token lease: 2 round trips (the rest wait for the lease in flight), 20 counted."""
    s = Stack(tokens[0], policy(redis_prefix, per_key="100/minute", lease_fraction=0.1))
    key = bearer(tokens[1]["backend"])
    async with s.client() as a:
        replies = await asyncio.gather(*(a.post("/recommend", headers=key) for _ in range(16)))
    assert [r.status_code for r in replies] == [200] * 16
    assert s.limiter.round_trips == 2
    stats = await FixedWindowRateLimiter(
        RedisStorage("async+" + REDIS, implementation="redispy", key_prefix=redis_prefix + "rl")
    ).get_window_stats(parse("100/minute"), "key", "backend")
    assert stats.remaining == 80
    await s.limiter.aclose()


async def test_two_workers_leasing_never_pass_more_than_the_limit(
    tokens: tuple[KeyRing, dict[str, str]], redis_prefix: str
) -> None:
    workers = [Stack(tokens[0], policy(redis_prefix, per_key="20/minute", lease_fraction=0.25)) for _ in range(2)]
    key = bearer(tokens[1]["backend"])
    codes = []
    for i in range(30):
        async with workers[i % 2].client() as c:
            codes.append((await c.post("/recommend", headers=key)).status_code)
    assert codes.count(200) == 20 and codes[20:] == [429] * 10
    for w in workers:
        await w.limiter.aclose()


async def test_limits_come_back_with_redis(
    tokens: tuple[KeyRing, dict[str, str]], redis_prefix: str, private_redis: int
) -> None:
    """Redis shut down: served unchecked; Redis back on the same port: limits hold again (after the breaker's
    back-off, so the test waits on the limiter's own answers, with a deadline)."""
    s = Stack(tokens[0], policy(redis_prefix, url=f"redis://127.0.0.1:{private_redis}/0"))
    async with s.client("10.0.9.1") as a:
        assert await statuses(a, "GET", "/demo", 2) == [200, 200]
        assert_429(await a.get("/demo"), 60)
    with contextlib.suppress(redis.ConnectionError):  # the server may close the connection on its way out
        redis.Redis(port=private_redis).shutdown(nosave=True)
    async with s.client("10.0.9.2") as b:
        assert await statuses(b, "GET", "/demo", 3) == [200] * 3
    restarted = start_redis(private_redis)
    try:
        deadline = time.monotonic() + 30
        codes: list[int] = []
        for n in range(10_000):
            async with s.client(f"10.1.{n // 250}.{n % 250}") as c:  # a fresh address each try
                codes = await statuses(c, "GET", "/demo", 3)
            if codes == [200, 200, 429]:
                break
            assert time.monotonic() < deadline, f"limits not back within 30 s: {codes}"
            await asyncio.sleep(0.05)  # the breaker's back-off is 0.1-0.5 s; poll the limiter's answers
    finally:
        restarted.kill()
        restarted.wait()
    assert s.limiter.failed_open >= 3
    await s.limiter.aclose()
