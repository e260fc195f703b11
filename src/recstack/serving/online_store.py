"""The online store: each user's recent activity, bounded in length and time, read by the next ``/recommend``.

:class:`RedisOnlineStore` is the real one. Its contract is that it never makes a request fail or hang: every call has a
short socket timeout (about 20 ms), errors mean "unavailable" (``None``), and a circuit breaker stops paying that
timeout on every request while Redis is down: after a failure the store stays *open* (answers ``None`` at once) for a
back-off that doubles up to a cap, then lets one call through to probe. :class:`InMemoryOnlineStore` honours the same
protocol for offline evaluation and single-process use.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis
import redis.asyncio as aioredis


@dataclass(frozen=True)
class Event:
    """One thing a user did to an item."""

    item_id: str
    event_type: str
    value: float
    timestamp: int

    def to_json(self) -> str:
        return json.dumps([self.item_id, self.event_type, self.value, self.timestamp], separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        item_id, event_type, value, timestamp = json.loads(raw)
        return cls(str(item_id), str(event_type), float(value), int(timestamp))


@dataclass(frozen=True)
class StoreState:
    """What ``/readyz`` reports about the store."""

    kind: str
    available: bool
    detail: str


class OnlineStore(Protocol):
    def recent(self, user_id: str, limit: int) -> list[Event] | None:
        """Newest-first events of the user (``[]`` if none); ``None`` when the store is unavailable."""
        ...

    def record(self, user_id: str, event: Event) -> int | None:
        """Append one event; the length of the user's list afterwards, or ``None`` when unavailable."""
        ...

    async def recent_async(self, user_id: str, limit: int) -> list[Event] | None:
        """:meth:`recent` for async endpoints: a slow store must not block the event loop's other requests."""
        ...

    async def record_async(self, user_id: str, event: Event) -> int | None: ...

    def state(self) -> StoreState: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RedisStoreConfig:
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "recstack:recent:"
    max_events: int = 50
    ttl_s: int = 7 * 24 * 3600
    timeout_s: float = 0.02
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0


class CircuitBreaker:
    """Closed -> (failure) -> open for ``backoff`` -> one probe call -> closed on success, open for 2x on failure."""

    def __init__(self, backoff_s: float, max_backoff_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._base = backoff_s
        self._max = max_backoff_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._backoff = backoff_s
        self._probing = False
        self.last_error = ""

    def allow(self) -> bool:
        with self._lock:
            if self._open_until == 0.0:
                return True
            if self._probing or self._clock() < self._open_until:
                return False
            self._probing = True  # exactly one caller probes; the others keep answering degraded
            return True

    def success(self) -> None:
        with self._lock:
            self._open_until = 0.0
            self._backoff = self._base
            self._probing = False
            self.last_error = ""

    def failure(self, error: BaseException) -> None:
        with self._lock:
            if self._open_until != 0.0:
                self._backoff = min(self._backoff * 2, self._max)
            self._open_until = self._clock() + self._backoff
            self._probing = False
            self.last_error = f"{type(error).__name__}: {error}"

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until != 0.0


class RedisOnlineStore:
    """Recent activity as one Redis list per user: LPUSH + LTRIM (bounded) + EXPIRE (TTL) in one round trip.

    Sync methods for scripts and tests, ``*_async`` ones for the service's async endpoints; both share one breaker.
    """

    def __init__(self, config: RedisStoreConfig = RedisStoreConfig()) -> None:
        self.config = config
        # No retries: a retry doubles the worst case, and the breaker already handles a flapping server.
        self._client = redis.Redis.from_url(
            config.url,
            socket_timeout=config.timeout_s,
            socket_connect_timeout=config.timeout_s,
            retry_on_timeout=False,
            retry=None,
            health_check_interval=0,
            decode_responses=False,
        )
        self._aclient: aioredis.Redis | None = None  # created on first use, inside the serving event loop
        self._breaker = CircuitBreaker(config.backoff_s, config.max_backoff_s)

    def _async_client(self) -> aioredis.Redis:
        if self._aclient is None:
            self._aclient = aioredis.Redis.from_url(
                self.config.url,
                socket_timeout=self.config.timeout_s,
                socket_connect_timeout=self.config.timeout_s,
                retry_on_timeout=False,
                retry=None,
                health_check_interval=0,
            )
        return self._aclient

    def _key(self, user_id: str) -> str:
        return self.config.key_prefix + user_id

    def recent(self, user_id: str, limit: int) -> list[Event] | None:
        if not self._breaker.allow():
            return None
        try:
            raw = self._client.lrange(self._key(user_id), 0, max(0, min(limit, self.config.max_events) - 1))
        except (redis.RedisError, OSError) as error:
            self._breaker.failure(error)
            return None
        self._breaker.success()
        return _decode(raw)

    def record(self, user_id: str, event: Event) -> int | None:
        if not self._breaker.allow():
            return None
        key = self._key(user_id)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.lpush(key, event.to_json())
            pipe.ltrim(key, 0, self.config.max_events - 1)
            pipe.expire(key, self.config.ttl_s)
            pipe.llen(key)
            length = pipe.execute()[-1]
        except (redis.RedisError, OSError) as error:
            self._breaker.failure(error)
            return None
        self._breaker.success()
        return int(length)

    async def recent_async(self, user_id: str, limit: int) -> list[Event] | None:
        if not self._breaker.allow():
            return None
        try:
            stop = max(0, min(limit, self.config.max_events) - 1)
            raw = await self._async_client().lrange(self._key(user_id), 0, stop)
        except (redis.RedisError, OSError, TimeoutError) as error:
            self._breaker.failure(error)
            return None
        self._breaker.success()
        return _decode(raw)

    async def record_async(self, user_id: str, event: Event) -> int | None:
        if not self._breaker.allow():
            return None
        key = self._key(user_id)
        try:
            pipe = self._async_client().pipeline(transaction=False)
            pipe.lpush(key, event.to_json())
            pipe.ltrim(key, 0, self.config.max_events - 1)
            pipe.expire(key, self.config.ttl_s)
            pipe.llen(key)
            length = (await pipe.execute())[-1]
        except (redis.RedisError, OSError, TimeoutError) as error:
            self._breaker.failure(error)
            return None
        self._breaker.success()
        return int(length)

    def ping(self) -> bool:
        """One health probe that respects the breaker (used by ``/readyz``)."""
        if not self._breaker.allow():
            return False
        try:
            self._client.ping()
        except (redis.RedisError, OSError) as error:
            self._breaker.failure(error)
            return False
        self._breaker.success()
        return True

    def state(self) -> StoreState:
        available = self.ping()
        url = self._client.connection_pool.connection_kwargs
        where = f"redis://{url.get('host', '?')}:{url.get('port', '?')}/{url.get('db', 0)}"
        detail = "ok" if available else (self._breaker.last_error or "circuit open")
        return StoreState(kind=where, available=available, detail=detail)

    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None


def _decode(raw: Sequence[bytes]) -> list[Event]:
    events = []
    for item in raw:
        try:
            events.append(Event.from_json(item))
        except (ValueError, TypeError):
            continue  # a foreign or corrupt entry must not break recommendations
    return events


class InMemoryOnlineStore:
    """The same protocol in one process (offline evaluation, notebooks); not shared between workers."""

    def __init__(self, max_events: int = 50) -> None:
        self._max = max_events
        self._lock = threading.Lock()
        self._lists: dict[str, deque[Event]] = {}

    def recent(self, user_id: str, limit: int) -> list[Event] | None:
        with self._lock:
            return list(self._lists.get(user_id, ()))[:limit]

    def record(self, user_id: str, event: Event) -> int | None:
        with self._lock:
            events = self._lists.setdefault(user_id, deque(maxlen=self._max))
            events.appendleft(event)
            return len(events)

    async def recent_async(self, user_id: str, limit: int) -> list[Event] | None:
        return self.recent(user_id, limit)

    async def record_async(self, user_id: str, event: Event) -> int | None:
        return self.record(user_id, event)

    def extend(self, user_id: str, events: Sequence[Event]) -> None:
        for event in events:
            self.record(user_id, event)

    def state(self) -> StoreState:
        return StoreState(kind="memory", available=True, detail="ok")

    def close(self) -> None:
        pass
