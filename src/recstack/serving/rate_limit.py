"""Per-key and per-IP rate limits in Redis (fixed windows), answered 429 with ``Retry-After``.

Which limits a request counts against:

* a request with a verified key (:mod:`recstack.serving.access` set its name in the scope): ``per_key``, by key;
* a request without one, or whose key's role is in ``ip_roles``: the per-IP limit, by client address. ``collect``
  keys belong there: they ship in web pages, so they name a site, not a client, and only the address tells one
  visitor's flood from everyone else's events. A route in ``per_route_ip`` (``GET /pixel.gif``) has its own per-IP
  limit and counter instead of ``per_ip``;
* ``exempt`` routes (probes, ``/metrics``) count against nothing: an orchestrator must never see a 429.

Limits are ``limits`` strings (``"100/second"``, ``"20/second;600/minute"``), parsed by the ``limits`` library, and
the counters use its Redis key layout (``<prefix>:LIMITER/<identity>/<amount>/<multiples>/<granularity>``), so
``limits.aio.strategies.FixedWindowRateLimiter`` over ``limits.aio.storage.RedisStorage(..., key_prefix=prefix)``
reads and clears the same counters. Fixed windows, not moving ones: O(1) memory per counter and one INCRBY, at the
price of up to 2x the limit across a window boundary, which is fine here (limits protect capacity, they do not meter
billing).

Cost. A Redis round trip per request cost the /recommend server +27% CPU per request (+0.42 ms of 1.53 ms, 2 workers
at c=16; the issue's target is at most 10%), so a worker does not ask Redis for every request:

* one Lua script serves every counter a request needs (the key's and the address's together): one round trip, where
  ``limits``' own ``hit`` costs one per limit plus two more to compute ``Retry-After``;
* each worker leases ``lease_fraction`` of a limit at a time (``INCRBY`` by the lease) and spends it locally, so a
  busy key costs one round trip per lease, not per request. One lease per counter is in flight per worker (requests
  arriving meanwhile wait for it). Leases make a limit slightly stricter: tokens leased and not spent by the end of a
  window are lost (at most a lease per worker and counter), which matters only to a client near its limit. A limit
  under ``2 / lease_fraction`` (the per-address ones, typically) leases 1 token: exact, one round trip a request;
* a counter found exhausted is remembered until its window ends, so a flood of refused requests costs no Redis call.

A request refused by one of its counters is counted in none of them: one visitor flooding a site's collect key is
refused by its address's limit without spending the key's budget for every other visitor.

When Redis is unreachable or slow (every call bounded by ``timeout_s``, behind the online store's circuit breaker),
the limiter fails OPEN: the request is served and counted as ``failed_open``. Limits protect capacity; keys (checked
without Redis) protect access. Failing closed would turn a Redis outage into a full outage of a service that is
built to keep answering from its bundle when Redis is down (degraded answers, serving/README.md), while failing open
only removes flood protection for as long as Redis is away. The switch is logged once each way, not per request.

Client addresses are ``scope["client"]``: behind a reverse proxy, let the server rewrite it from the proxy's headers
(uvicorn's ``--forwarded-allow-ips``), never read ``X-Forwarded-For`` here (any client can send one). IPv6 clients
count per /64, the block one subscriber gets (a single host can rotate addresses within it). The counters hold an
address for one window at most (seconds to a minute), then expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis
import redis.asyncio as aioredis
from limits import RateLimitItem, parse_many

from recstack.serving.access import KEY_STATE, ROLE_STATE, RouteTable, send_error
from recstack.serving.http_guards import ASGIApp, Receive, Scope, Send
from recstack.serving.online_store import REDIS_ERRORS, CircuitBreaker, Ticket

logger = logging.getLogger("recstack.ratelimit")

# KEYS[i]: a fixed-window counter; ARGV[3i-2], ARGV[3i-1], ARGV[3i]: its window (s), limit and lease. If any counter is
# at its limit, nothing is counted and the answer is {i, PTTL} for the exhausted counter with the longest wait.
# Otherwise each counter is advanced by its grant (its lease, or what is left below the limit) and the answer is
# {0, grant1, pttl1, grant2, pttl2, ...}. A counter found without a TTL (an EXPIRE lost to a crash elsewhere) gets one,
# so it can never block its client forever.
HIT_SCRIPT = """
local worst, wait = 0, -1
local counts = {}
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  counts[i] = count
  if count >= tonumber(ARGV[3 * i - 1]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      redis.call('EXPIRE', key, ARGV[3 * i - 2])
      ttl = tonumber(ARGV[3 * i - 2]) * 1000
    end
    if ttl > wait then worst, wait = i, ttl end
  end
end
if worst > 0 then return {worst, wait} end
local out = {0}
for i, key in ipairs(KEYS) do
  local grant = math.min(tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i - 1]) - counts[i])
  local ttl = -1
  if redis.call('INCRBY', key, grant) > grant then ttl = redis.call('PTTL', key) end
  if ttl < 0 then
    redis.call('EXPIRE', key, ARGV[3 * i - 2])
    ttl = tonumber(ARGV[3 * i - 2]) * 1000
  end
  out[2 * i] = grant
  out[2 * i + 1] = ttl
end
return out
"""
MAX_GRANTS = 10_000
"""Local leases and remembered refusals per worker; beyond this, expired ones are dropped (then all, if need be)."""


class Counter(NamedTuple):
    """One fixed-window counter a request hits: its limit, its Redis key, and what it counts (for the 429)."""

    item: RateLimitItem
    redis_key: str
    what: str
    lease: int


class Grant:
    """What a worker holds of one counter: ``tokens`` left to spend until ``until`` (monotonic seconds). ``tokens``
    0 means refused: the counter is exhausted until ``until``."""

    __slots__ = ("tokens", "until")

    def __init__(self, tokens: int, until: float) -> None:
        self.tokens = tokens
        self.until = until


LIMITED = "limited"
FAILED_OPEN = "failed_open"

Outcome = Callable[[str], None]
"""Called with :data:`LIMITED` or :data:`FAILED_OPEN` per request that had that outcome (e.g. a Prometheus counter)."""


@dataclass(frozen=True)
class RateLimitPolicy:
    """What :class:`RateLimitMiddleware` enforces; no defaults here (``configs/serve.yaml`` holds them).

    ``per_key`` / ``per_ip``: ``limits`` strings, ``""`` for none. ``per_route_ip``: ``"METHOD /path"`` -> a per-IP
    limit replacing ``per_ip`` on that route. ``ip_roles``: roles whose keyed requests also count per IP.
    ``exempt``: routes never limited. ``lease_fraction``: the share of a limit a worker takes from Redis at a time
    (0: one round trip per request, exact). The Redis settings mirror the online store's (timeout per call, bounded
    pool, circuit breaker)."""

    per_key: str
    per_ip: str
    per_route_ip: Mapping[str, str]
    ip_roles: Collection[str]
    exempt: Collection[str]
    lease_fraction: float
    redis_url: str
    key_prefix: str
    timeout_s: float
    max_connections: int
    backoff_s: float
    max_backoff_s: float
    failure_threshold: int


EXEMPT_ROUTES: tuple[str, ...] = ("/livez", "/healthz", "/readyz", "/metrics")
"""Probes and the metrics scrape: never limited (a 429 there would read as an outage)."""


def parse_limits(spec: str, what: str) -> tuple[RateLimitItem, ...]:
    """``"100/second;1000/minute"`` -> limit items; ``""`` -> none. A ValueError names the setting."""
    if not spec.strip():
        return ()
    try:
        return tuple(parse_many(spec))
    except ValueError as error:
        raise ValueError(
            f"{what}: {spec!r} is not a rate limit ({error}); write e.g. '100/second' or '20/second;600/minute'"
        ) from None


def client_address(scope: Scope) -> str:
    """The client's address as rate limits count it: IPv4 as is, IPv6 by /64, IPv4-mapped IPv6 as IPv4."""
    client = scope.get("client")
    host = client[0] if client else None
    if not host:
        return "unknown"  # no peer address (a Unix socket, an in-process call): one shared counter
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return str(host)[:64]
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address) + "/64"
    return str(address)


class RateLimitMiddleware:
    """Enforces a :class:`RateLimitPolicy`; see the module docstring. ``on_outcome`` gets each 429 and each request
    served unchecked because Redis was unavailable; :attr:`limited` and :attr:`failed_open` count them too."""

    def __init__(self, app: ASGIApp, *, policy: RateLimitPolicy, on_outcome: Outcome | None = None) -> None:
        if not 0 <= policy.lease_fraction <= 1:
            raise ValueError(f"rate_limit_lease_fraction is {policy.lease_fraction}; it must be within [0, 1]")
        self.app = app
        self.policy = policy
        self.on_outcome = on_outcome
        self._per_key = parse_limits(policy.per_key, "rate_limit_per_key")
        self._per_ip = parse_limits(policy.per_ip, "rate_limit_per_ip")
        route_ip = {
            spec: (spec.replace(" ", ""), parse_limits(limit, f"per-IP limit of {spec}"))
            for spec, limit in policy.per_route_ip.items()
        }
        self._route_ip: RouteTable[tuple[str, tuple[RateLimitItem, ...]]] = RouteTable(route_ip)
        self._exempt: RouteTable[bool] = RouteTable(policy.exempt, True)
        self._ip_roles = frozenset(policy.ip_roles)
        self._prefix = policy.key_prefix
        self._breaker = CircuitBreaker(
            policy.backoff_s,
            policy.max_backoff_s,
            max(1.0, 10 * policy.timeout_s),
            failure_threshold=policy.failure_threshold,
        )
        self._client: aioredis.Redis | None = None  # created on first use, inside the serving event loop
        self._script: Any = None
        self._grants: dict[str, Grant] = {}
        self._leasing: dict[str, asyncio.Event] = {}
        self._failing = False
        self.limited = 0
        self.failed_open = 0
        self.round_trips = 0

    def _lease(self, item: RateLimitItem) -> int:
        return max(1, int(item.amount * self.policy.lease_fraction))

    def _counters(self, scope: Scope) -> list[Counter]:
        """The counters this request hits; empty when it is not limited."""
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        if self._exempt.match(method, path):
            return []
        prefix, lease = self._prefix, self._lease
        state = scope.get("state") or {}
        key = state.get(KEY_STATE)
        out = (
            [Counter(i, f"{prefix}:{i.key_for('key', key)}", "API key", lease(i)) for i in self._per_key] if key else []
        )
        if key is None or state.get(ROLE_STATE) in self._ip_roles:
            route = self._route_ip.match(method, path)
            label, items = route if route is not None else (None, self._per_ip)
            who = ("ip", client_address(scope)) if label is None else ("ip", label, client_address(scope))
            out += [Counter(i, f"{prefix}:{i.key_for(*who)}", "address", lease(i)) for i in items]
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counters = self._counters(scope)
        if counters and not await self._admit(counters, send):
            return
        await self.app(scope, receive, send)

    async def _admit(self, counters: list[Counter], send: Send) -> bool:
        """Spend one token of each counter (local leases first, one script call for the rest); False once the 429
        is sent."""
        grants = self._grants
        while True:
            now = time.monotonic()
            held: list[Grant] = []
            needed: list[Counter] = []
            leasing: asyncio.Event | None = None
            for counter in counters:
                grant = grants.get(counter.redis_key)
                if grant is None or now >= grant.until:
                    # One lease in flight per counter and worker: requests arriving meanwhile wait for it and spend
                    # from it, rather than each leasing more than the client will spend (tokens reserved by one
                    # worker are refused by the other, so over-leasing would refuse a client below its limit).
                    leasing = self._leasing.get(counter.redis_key) if counter.lease > 1 else None
                    if leasing is not None:
                        break
                    needed.append(counter)
                elif grant.tokens == 0:
                    await self._reject(send, counter, (grant.until - now) * 1000)
                    return False
                else:
                    held.append(grant)
            if leasing is None:
                break
            await leasing.wait()
        if needed and not await self._lease_for(needed, send):
            return False
        for grant in held:
            # Another request may have spent the last token while this one waited on Redis: then both pass (one
            # request of slack; never below zero, so a spent lease is never mistaken for a refusal).
            if grant.tokens > 1:
                grant.tokens -= 1
            else:
                grant.until = 0.0  # spent: the next request leases again
        return True

    async def _lease_for(self, needed: list[Counter], send: Send) -> bool:
        events = {c.redis_key: asyncio.Event() for c in needed if c.lease > 1}
        self._leasing.update(events)
        try:
            replies = await self._hit(needed)
            if replies is None:
                return True  # Redis unavailable: served unchecked (counted)
            now = time.monotonic()
            if replies[0] > 0:  # refused: nothing was counted; remembered until the window ends
                counter, wait_ms = needed[replies[0] - 1], replies[1]
                self._remember(counter.redis_key, Grant(0, now + wait_ms / 1000))
                await self._reject(send, counter, wait_ms)
                return False
            for i, counter in enumerate(needed):
                granted, ttl_ms = replies[2 * i + 1], replies[2 * i + 2]
                if granted > 1:  # this request spends one; the rest is this worker's to spend
                    self._remember(counter.redis_key, Grant(granted - 1, now + ttl_ms / 1000))
            return True
        finally:
            for key, event in events.items():
                self._leasing.pop(key, None)
                event.set()

    def _remember(self, redis_key: str, grant: Grant) -> None:
        grants = self._grants
        if len(grants) >= MAX_GRANTS and redis_key not in grants:
            now = time.monotonic()
            for key in [k for k, g in grants.items() if g.until <= now]:
                del grants[key]
            if len(grants) >= MAX_GRANTS:
                grants.clear()
        grants[redis_key] = grant

    async def _reject(self, send: Send, counter: Counter, retry_ms: float) -> None:
        self.limited += 1
        if self.on_outcome is not None:
            self.on_outcome(LIMITED)
        retry_s = max(1, math.ceil(retry_ms / 1000))
        item = counter.item
        # Neither the address nor the key name goes into the message: ErrorShapeMiddleware logs it.
        body = {
            "error": f"too many requests for this {counter.what} (limit {item.amount} per {_window(item)}); "
            f"retry after {retry_s} s",
            "field": "rate_limit",
        }
        await send_error(send, 429, body, [(b"retry-after", str(retry_s).encode())])

    def _redis(self) -> tuple[aioredis.Redis, Any]:
        if self._client is None:
            policy = self.policy
            # As the online store's pool: bounded, no retries (a retry doubles the worst case; the breaker handles a
            # flapping server), every wait, connect and read bounded by timeout_s.
            pool = aioredis.BlockingConnectionPool.from_url(
                policy.redis_url,
                max_connections=policy.max_connections,
                timeout=policy.timeout_s,
                socket_timeout=policy.timeout_s,
                socket_connect_timeout=policy.timeout_s,
                retry_on_timeout=False,
                retry=None,
                health_check_interval=0,
            )
            self._client = aioredis.Redis(connection_pool=pool)
            self._script = self._client.register_script(HIT_SCRIPT)  # EVALSHA, loading it again after a flush
        return self._client, self._script

    async def _hit(self, counters: Sequence[Counter]) -> list[int] | None:
        """One round trip (see HIT_SCRIPT): ``[i, ms]`` when the i-th counter (from 1) is exhausted for ``ms`` more,
        ``[0, grant1, ttl_ms1, ...]`` when every counter was advanced, ``None`` when Redis is unavailable."""
        ticket = self._breaker.allow()
        if ticket is None:
            self._fail_open(None)
            return None
        client, script = self._redis()
        self.round_trips += 1
        try:
            replies = await script(keys=[c.redis_key for c in counters], args=self._args(counters))
        except BaseException as error:
            self._settle(ticket, error)
            if isinstance(error, Exception):
                if isinstance(error, redis.ConnectionError) and "connecting to" not in str(error):
                    # A pooled socket Redis closed (a restart): every idle one is dead too, so drop them now rather
                    # than fail one request per stale socket later.
                    with contextlib.suppress(Exception):
                        await client.connection_pool.disconnect(inuse_connections=False)
                self._fail_open(error)
                return None
            raise  # a cancellation: the request is gone anyway
        self._breaker.success(ticket)
        if self._failing:
            self._failing = False
            logger.info("rate limiting is back: Redis answers again")
        return [int(value) for value in replies]

    @staticmethod
    def _args(counters: Sequence[Counter]) -> list[int]:
        return [n for c in counters for n in (c.item.get_expiry(), c.item.amount, c.lease)]

    def _settle(self, ticket: Ticket, error: BaseException) -> None:
        if isinstance(error, REDIS_ERRORS):
            self._breaker.failure(ticket, error)
        elif isinstance(error, Exception):
            self._breaker.failure(ticket, error)
            logger.exception("rate limit call failed unexpectedly; serving the request unchecked")
        else:
            self._breaker.release(ticket)

    def _fail_open(self, error: BaseException | None) -> None:
        self.failed_open += 1
        if self.on_outcome is not None:
            self.on_outcome(FAILED_OPEN)
        if not self._failing:
            self._failing = True
            logger.warning(
                "rate limits are not enforced while Redis is unavailable (%s); requests are served and counted as %s",
                f"{type(error).__name__}: {error}" if error else "circuit open",
                FAILED_OPEN,
            )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


def prometheus_outcomes(namespace: str = "recstack") -> Outcome:
    """An ``on_outcome`` counting ``<namespace>_rate_limit_total{outcome}`` on BentoML's ``/metrics``. Call it once
    per process (Prometheus refuses a metric registered twice)."""
    import bentoml

    counter = bentoml.metrics.Counter(
        name=f"{namespace}_rate_limit_total",
        documentation="Requests refused by a rate limit (limited) or served unchecked because Redis was "
        "unavailable (failed_open)",
        labelnames=["outcome"],
    )
    children: dict[str, Any] = {}

    def count(outcome: str) -> None:
        child = children.get(outcome)
        if child is None:
            child = children[outcome] = counter.labels(outcome=outcome)
        child.inc()

    return count
