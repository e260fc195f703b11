"""The online store: each user's recent activity, bounded in length and time, read by the next ``/recommend``.

:class:`RedisOnlineStore` is the real one. Its contract is that it never makes a request fail or hang: every call has a
short socket timeout (``redis_timeout_s``, 100 ms by default), the async connection pool is bounded (a request waits for a free connection no
longer than that timeout), errors mean "unavailable" (``None``), and a circuit breaker stops paying that timeout on
every request while Redis is down: after a failure the store stays *open* (answers ``None`` at once) for a back-off
that doubles up to a cap, then lets one call through to probe. The probe always resolves: cancelled, or failed in a
way nobody expected, it is released in a ``finally``, and a probe older than its deadline is replaced, so the store
can never stay degraded after Redis is back. :class:`InMemoryOnlineStore` has the same methods for offline evaluation
and single-process use. The defaults live in ``configs/serve.yaml`` (``recstack.serving.settings``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import redis
import redis.asyncio as aioredis

from recstack.collect.recent import decode_recent, encode_recent


@dataclass(frozen=True)
class Event:
    """One thing a user did to an item."""

    item_id: str
    event_type: str
    value: float
    timestamp: int

    def to_json(self) -> str:
        """The collector's recent-list entry format (recstack.collect.recent: the one home of it)."""
        return encode_recent(self.item_id, self.event_type, self.value, self.timestamp)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        return cls(*decode_recent(raw))


@dataclass(frozen=True)
class SubjectState:
    """One subject's online state: recent events, consent to personalisation, erased (a tombstone), and the segments
    it is in now (read only when asked for: cold users get their segments' popularity)."""

    recent: list[Event]
    personalisation: bool
    erased: bool
    segments: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StoreState:
    """What ``/readyz`` reports about the store."""

    kind: str
    available: bool
    detail: str


logger = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that mean "Redis is unavailable" (a ConnectionError also means the bounded pool had no free connection in
# time). Anything else is a bug or a cancellation: the breaker still resolves, see RedisOnlineStore._guarded.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)


def _dead_socket(error: BaseException) -> bool:
    """A pooled connection the server closed (not a timeout, not a full pool, not a refused connect)."""
    if isinstance(error, redis.TimeoutError):
        return False
    text = str(error)
    return "No connection available" not in text and "connecting to" not in text


@dataclass(frozen=True)
class RedisStoreConfig:
    """No defaults here: ``configs/serve.yaml`` holds them (``ServeSettings.redis_store()`` builds this)."""

    url: str
    key_prefix: str
    max_events: int
    ttl_s: int
    timeout_s: float
    max_connections: int
    backoff_s: float
    max_backoff_s: float
    failure_threshold: int

    @property
    def probe_deadline_s(self) -> float:
        """A probe still unresolved after this is presumed lost and another caller may probe. Every Redis call is
        bounded by ``timeout_s`` (pool wait + connect + read), so a live probe resolves long before."""
        return max(1.0, 10 * self.timeout_s)


class Ticket:
    """What :meth:`CircuitBreaker.allow` hands a caller it lets through: a call made while closed, or the one probe of
    a half-open breaker. The caller gives it back with its verdict (:meth:`~CircuitBreaker.success`,
    :meth:`~CircuitBreaker.failure`) or without one (:meth:`~CircuitBreaker.release`)."""

    __slots__ = ("probe",)

    def __init__(self, probe: bool) -> None:
        self.probe = probe

    def __repr__(self) -> str:
        return f"Ticket(probe={self.probe})"


class CircuitBreaker:
    """Closed -> (``failure_threshold`` failures in a row) -> open for ``backoff`` -> one probe call -> closed on
    success, open for 2x on failure.

    The threshold is what keeps a healthy but busy Redis from degrading answers: one timeout can be the worker's own
    event loop reading the reply late (at c=16 on two busy cores), and a restarted Redis costs every pooled connection
    one reconnect; a Redis that is really gone fails every call, so three in a row open the circuit within
    microseconds (refused) or three timeouts (paused). A failed probe reopens at once.

    Every admitted call holds a :class:`Ticket`. Only the probe's failure doubles the back-off: calls admitted while
    the breaker was closed that fail after it opened (stragglers) change nothing, so a burst of in-flight calls opens
    it for ``backoff_s``, not for the cap. A probe that ends without a verdict (cancelled, or an unexpected error) is
    :meth:`released`: the breaker stays open and the next caller probes again; a release by anyone but the current
    probe changes nothing. A probe older than ``probe_deadline_s`` is replaced by a new one, so a probe lost in a way
    no ``finally`` saw still cannot wedge the breaker.
    """

    def __init__(
        self,
        backoff_s: float,
        max_backoff_s: float,
        probe_deadline_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        failure_threshold: int = 1,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        self._threshold = failure_threshold
        self._failures = 0
        self._base = backoff_s
        self._max = max_backoff_s
        self._deadline = probe_deadline_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._backoff = backoff_s
        self._probe: Ticket | None = None
        self._probe_started = 0.0
        self.last_error = ""

    def allow(self) -> Ticket | None:
        """A ticket for a call that may go to Redis, or ``None``: answer without it."""
        with self._lock:
            if self._open_until == 0.0:
                return Ticket(probe=False)
            now = self._clock()
            if now < self._open_until:
                return None
            if self._probe is not None and now - self._probe_started < self._deadline:
                return None  # exactly one caller probes; the others keep answering degraded
            self._probe = Ticket(probe=True)
            self._probe_started = now
            return self._probe

    def success(self, ticket: Ticket) -> None:
        """Redis answered: closed (any answer, a straggler's too, shows Redis is back)."""
        with self._lock:
            self._open_until = 0.0
            self._backoff = self._base
            self._probe = None
            self._failures = 0
            self.last_error = ""

    def failure(self, ticket: Ticket, error: BaseException) -> None:
        with self._lock:
            self.last_error = f"{type(error).__name__}: {error}"
            if self._open_until == 0.0:
                self._failures += 1
                if self._failures < self._threshold:
                    return  # closed still: this call answers degraded, the next ones try Redis
                self._backoff = self._base
            elif ticket is self._probe:
                self._backoff = min(self._backoff * 2, self._max)  # the probe failed: wait longer
                self._probe = None
            else:
                return  # a straggler admitted while closed, or a replaced probe: already open, nothing new
            self._open_until = self._clock() + self._backoff

    def release(self, ticket: Ticket) -> None:
        """A call ended without a verdict on Redis (cancelled): if it is the current probe, the next caller probes."""
        with self._lock:
            if ticket is self._probe:
                self._probe = None

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until != 0.0

    @property
    def probing(self) -> bool:
        with self._lock:
            return self._probe is not None


class RedisOnlineStore:
    """Recent activity as one Redis list per user: LPUSH + LTRIM (bounded) + EXPIRE (TTL) in one round trip.

    Sync methods for scripts and tests, ``*_async`` ones for the service's async endpoints; both share one breaker.
    """

    def __init__(self, config: RedisStoreConfig) -> None:
        self.config = config
        # No retries: a retry doubles the worst case, and the breaker already handles a flapping server.
        self._client = redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(
                config.url, max_connections=config.max_connections, timeout=config.timeout_s, **self._conn_kwargs()
            )
        )
        self._aclient: aioredis.Redis | None = None  # created on first use, inside the serving event loop
        self._breaker = CircuitBreaker(
            config.backoff_s, config.max_backoff_s, config.probe_deadline_s, failure_threshold=config.failure_threshold
        )

    def _conn_kwargs(self) -> dict:
        return {
            "socket_timeout": self.config.timeout_s,
            "socket_connect_timeout": self.config.timeout_s,
            "retry_on_timeout": False,
            "retry": None,
            "health_check_interval": 0,
        }

    def _async_client(self) -> aioredis.Redis:
        if self._aclient is None:
            # Bounded: at most max_connections sockets per worker; a caller waits for one at most timeout_s, then
            # gets a ConnectionError ("No connection available"), i.e. a degraded answer, never an unbounded queue.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.config.url,
                max_connections=self.config.max_connections,
                timeout=self.config.timeout_s,
                **self._conn_kwargs(),
            )
            self._aclient = aioredis.Redis(connection_pool=pool)
        return self._aclient

    def _key(self, user_id: str) -> str:
        return self.config.key_prefix + user_id

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    def _settle(self, ticket: Ticket, error: BaseException | None) -> bool:
        """Give the breaker one call's outcome; True when the caller answers degraded (``None``), False when it must
        re-raise. Redis errors and unexpected errors (a bug: logged) are failures; a cancellation or another
        ``BaseException`` has no verdict on Redis and only releases the ticket."""
        if error is None:
            self._breaker.success(ticket)
            return False
        if isinstance(error, REDIS_ERRORS):
            self._breaker.failure(ticket, error)
            return True
        if isinstance(error, Exception):
            self._breaker.failure(ticket, error)
            logger.exception("online store call failed unexpectedly; answering without it")
            return True
        self._breaker.release(ticket)
        return False

    def _guarded_sync(self, call: Callable[[], object]) -> object | None:
        ticket = self._breaker.allow()
        if ticket is None:
            return None
        try:
            result = call()
        except BaseException as error:
            if self._settle(ticket, error):
                return None
            raise
        self._settle(ticket, None)
        return result

    async def _guarded(self, call: Callable[[], Awaitable[object]]) -> object | None:
        """Run one Redis call under the breaker; ``None`` when unavailable. Whatever happens, the call resolves its
        ticket (:meth:`_settle`): success, failure, or release (cancelled)."""
        ticket = self._breaker.allow()
        if ticket is None:
            return None
        try:
            try:
                result = await call()
            except (redis.ConnectionError, ConnectionResetError, BrokenPipeError) as error:
                if not _dead_socket(error):
                    raise
                # Redis went away and came back (a restart, a failover): every idle socket in the pool is dead, and
                # each would cost one request a degraded answer, minutes later for a rarely used one (seen in
                # benchmarks/soak.py). Drop them all and try once more on a fresh connection; if Redis is really
                # gone, that connect is refused at once and the call fails as it would have.
                await self._async_client().connection_pool.disconnect(inuse_connections=False)
                result = await call()
        except BaseException as error:
            if self._settle(ticket, error):
                return None
            raise
        self._settle(ticket, None)
        return result

    def recent(self, user_id: str, limit: int) -> list[Event] | None:
        stop = max(0, min(limit, self.config.max_events) - 1)
        raw = self._guarded_sync(lambda: self._client.lrange(self._key(user_id), 0, stop))
        return None if raw is None else _decode(raw)  # type: ignore[arg-type]

    def record(self, user_id: str, event: Event) -> int | None:
        key = self._key(user_id)

        def call() -> object:
            pipe = self._client.pipeline(transaction=False)
            pipe.lpush(key, event.to_json())
            pipe.ltrim(key, 0, self.config.max_events - 1)
            pipe.expire(key, self.config.ttl_s)
            pipe.llen(key)
            return pipe.execute()[-1]

        length = self._guarded_sync(call)
        return None if length is None else int(length)  # type: ignore[call-overload]

    async def recent_async(self, user_id: str, limit: int) -> list[Event] | None:
        stop = max(0, min(limit, self.config.max_events) - 1)
        raw = await self._guarded(lambda: self._async_client().lrange(self._key(user_id), 0, stop))
        return None if raw is None else _decode(raw)  # type: ignore[arg-type]

    async def subject_async(
        self,
        subject: str,
        limit: int,
        consent_key: str | None,
        tombstones: str | None,
        memberships: str | None = None,
    ) -> SubjectState | None:
        """What /recommend needs about one (pseudonymised) subject in one round trip: recent activity, whether it
        consented to personalisation (``consent_key`` None: not asked), whether it was erased, and the segments it is
        in (``memberships``: the subject's memberships set; None: not asked). None: unavailable."""
        stop = max(0, min(limit, self.config.max_events) - 1)
        key = self._key(subject)

        async def call() -> object:
            pipe = self._async_client().pipeline(transaction=False)
            pipe.lrange(key, 0, stop)
            if consent_key is not None:
                pipe.hget(consent_key, "personalisation")
            if tombstones is not None:
                pipe.sismember(tombstones, subject)
            if memberships is not None:
                pipe.smembers(memberships)
            return await pipe.execute()

        replies = await self._guarded(call)
        if replies is None:
            return None
        raw, rest = replies[0], list(replies[1:])  # type: ignore[index]
        personalisation = True if consent_key is None else rest.pop(0) == b"1"
        erased = bool(rest.pop(0)) if tombstones is not None else False
        segments = frozenset(m.decode() for m in rest.pop(0)) if memberships is not None else frozenset()
        return SubjectState(_decode(raw), personalisation, erased, segments)

    def call(self, call: Callable[[redis.Redis], T]) -> T | None:
        """Any other synchronous Redis call (``call(client)``, e.g. at a worker's start-up) under the same timeout and
        breaker: its result, or None when Redis is unavailable."""
        return self._guarded_sync(lambda: call(self._client))  # type: ignore[return-value]

    async def call_async(self, call: Callable[[aioredis.Redis], Awaitable[T]]) -> T | None:
        """Any other async Redis call (``call(client)``) under the same bounded pool, timeout and breaker: its
        result, or None when Redis is unavailable (the caller answers 503 or degrades)."""
        return await self._guarded(lambda: call(self._async_client()))  # type: ignore[return-value]

    async def record_async(self, user_id: str, event: Event) -> int | None:
        key = self._key(user_id)

        async def call() -> object:
            pipe = self._async_client().pipeline(transaction=False)
            pipe.lpush(key, event.to_json())
            pipe.ltrim(key, 0, self.config.max_events - 1)
            pipe.expire(key, self.config.ttl_s)
            pipe.llen(key)
            return (await pipe.execute())[-1]

        length = await self._guarded(call)
        return None if length is None else int(length)  # type: ignore[call-overload]

    def ping(self) -> bool:
        """One synchronous health probe that respects the breaker (scripts)."""
        return self._guarded_sync(self._client.ping) is not None

    async def ping_async(self) -> bool:
        """The probe ``/readyz`` uses: the same async pool and breaker as the requests, so it cannot say "ready"
        while requests are answered degraded."""
        return await self._guarded(lambda: self._async_client().ping()) is not None

    def _where(self) -> str:
        url = self._client.connection_pool.connection_kwargs
        return f"redis://{url.get('host', '?')}:{url.get('port', '?')}/{url.get('db', 0)}"

    def state(self) -> StoreState:
        available = self.ping()
        return self._state(available)

    async def state_async(self) -> StoreState:
        available = await self.ping_async()
        return self._state(available)

    def _state(self, available: bool) -> StoreState:
        if available:
            return StoreState(kind=self._where(), available=True, detail="ok")
        detail = self._breaker.last_error or "circuit open"
        if self._breaker.probing:
            detail = f"probing after: {detail}"
        return StoreState(kind=self._where(), available=False, detail=detail)

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
