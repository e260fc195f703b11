"""The real-time segment follower (``recstack-segments follow``): the collector's stream -> per-user counters in Redis
-> segment membership, a second or less after the event.

A consumer group of its own (``segments``) on the collector stream (recstack.collect.records), beside the lake
consumer's; the lake consumer trims the stream only below what every group has acknowledged, so the follower sees
every entry. Per batch of a few hundred events:

1. ``XREADGROUP``; events of bots are dropped, and of event ids seen recently (a client's retry); audit entries are
   ignored; ``aliases`` move an anonymous visitor's counters into the user's (realtime_state.merge_states).
2. One round trip: the previous batch's ``XACK``, the rules version, and READ_SCRIPT: per subject whether it is in
   the erasure tombstone set, its counters hash and its memberships (one reply, parsed in C).
3. In Python (realtime_state): each event is added to its hour bucket of every feature it matches (the one compiler's
   ``feature_updates``), a session starts after 30 minutes without an event, profile events set the latest attributes;
   then the segments whose inputs moved are evaluated for the user as of its latest event (``compile.evaluate``'s
   generated twin, realtime_predicate, over feature values cached per user and hour).
4. One COMMIT_SCRIPT call, atomic: the changed counter fields (``HSET`` of absolute values: the follower is the hash's
   only writer, so one command per user instead of one per field), ``SADD``/``SREM`` memberships, ``ZADD``/``ZREM``
   members (score 0), the ``active`` zset (subject -> latest event ms), and the ``applied`` mark (the last entry id).
   The script skips the writes of a subject that is in the tombstone set by then: an erasure between 2 and 4 never
   finds its keys written again. The same round trip reads the next entries, without waiting (``XREADGROUP`` with no
   ``BLOCK``): under load a batch costs two round trips, not three; when the stream is empty, 1 waits on it.

Exactly once: the counters, memberships and ``applied`` commit together, and ``XACK`` follows. A crash between the two
leaves entries pending; at start the follower re-reads its pending entries and skips every entry ``<= applied``, and
so it does after a round trip that failed (a read's reply may be lost, its entries delivered and pending unseen).
One follower per group at a time (``applied`` is one mark): a second process is a hot spare, not a partner.

Windows slide without events: membership can change only at an hour boundary (windows are whole UTC hours), so every
``sweep_interval_s`` the follower checks whether the hour changed and, if so, re-evaluates every user in the
``active`` zset as of the wall clock (:meth:`SegmentFollower.sweep`), in chunks between batches. Users with no event
in the horizon are then final (no window holds their events) and leave ``active``; their hash keeps only state.

Limits (the batch run, ``recstack-segments run``, is the authority and publishes over these):

* Counters start when the group is created (at the oldest entry still in the stream): history before that is the
  batch run's. A rule added later counts from its reload on.
* Event order is arrival order: an event older than the user's ``_last`` is counted in its own hour but never starts
  a session; duplicates older than the in-memory window (``dedupe_ids``) or across a restart are counted again.
* An alias merges the visitor's counters into the user's once: sessions of the two are counted apart, and a visitor
  aliased to a second user later stays with the first (the batch uses the latest alias for all its events).
* A member published by the batch run is left as the batch put it until the user's next event; then the follower's
  counters decide, and they hold only what the follower saw (the batch's history is not loaded into them).

Latency per event (``FollowerStats.latencies``, the benchmark's p50/p99): from the entry's ``XADD`` (the entry id's
milliseconds, Redis's clock) to the return of the commit that applied the event's counters and membership change (the
follower's clock, same host): what a caller of ``GET /users/{id}/segments`` waits for.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from hiredis import pack_command
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from recstack.collect.consumer import RecentIds
from recstack.collect.records import (
    TABLE_FIELD,
    StreamNames,
    counters_key,
    members_key,
    memberships_key,
    segments_key,
    tombstone_key,
    visitors_key,
)
from recstack.collect.settings import CollectSettings
from recstack.profiles.realtime_state import (
    ALIAS,
    Alias,
    Event,
    RuleSet,
    UserState,
    apply_events,
    decode_entries,
    membership_changes,
    merge_states,
    parse_id,
    segments_to_evaluate,
    stale_fields,
)
from recstack.profiles.rules import DEFAULT_HORIZON_H, HOUR_MS, SESSION_GAP_MS, Segment

log = logging.getLogger(__name__)

RULES_VERSION = "rules_version"  # segments_key(names, ...): the registry's change counter (profiles.segments_online)
_LATENCY_KEPT = 1_000_000  # per-entry latency samples kept for percentiles
_SWEEP_CHUNK = 500


@dataclass
class FollowerStats:
    entries: int = 0
    events: int = 0  # events applied
    batches: int = 0
    bots: int = 0
    duplicates: int = 0
    erased: int = 0  # events of tombstoned subjects dropped
    malformed: int = 0
    skipped: int = 0  # entries already applied (<= the applied mark) read again after a restart
    aliases: int = 0
    entered: int = 0
    left: int = 0
    retries: int = 0  # batches applied again (an erasure during the batch, or Redis away)
    sweeps: int = 0
    swept_users: int = 0
    reloads: int = 0
    # (ms from XADD to commit, events of the entry): the latency every event of the entry saw
    latencies: deque = field(default_factory=lambda: deque(maxlen=_LATENCY_KEPT))
    # (ms from the stream read returning to the commit returning, events): the follower's own share of the above
    apply_ms: deque = field(default_factory=lambda: deque(maxlen=_LATENCY_KEPT))

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("latencies", "apply_ms")}
        out.update(latency_percentiles(self.latencies))
        out.update({f"apply_{k}": v for k, v in latency_percentiles(self.apply_ms).items()})
        return out


def latency_percentiles(samples: Any, quantiles: tuple[float, ...] = (0.5, 0.99, 0.999)) -> dict[str, float | None]:
    """Event-weighted percentiles of ``(latency_ms, events)`` samples: ``{"p50_ms": .., "p99_ms": .., ...}``."""
    pairs = sorted(samples)
    total = sum(n for _, n in pairs)
    out: dict[str, float | None] = {}
    for q in quantiles:
        key = f"p{q * 100:g}_ms".replace(".", "_")
        if not total:
            out[key] = None
            continue
        rank, seen = q * total, 0
        for value, n in pairs:
            seen += n
            if seen >= rank:
                out[key] = float(value)
                break
    out["max_ms"] = float(pairs[-1][0]) if pairs else None
    return out


# Per subject: in the tombstone set? (one SMISMEMBER for all), its counters hash (unless cached), its memberships: one
# reply parsed in C. KEYS: tombstones. ARGV: the counters and memberships key prefixes (records.counters_key,
# memberships_key), then per subject: the subject, '1' when its counters are needed (not cached). Reply: the erased
# flags, then per subject its counters and its memberships.
READ_SCRIPT = """
local counters, memberships = ARGV[1], ARGV[2]
local subjects = {}
for j = 3, #ARGV, 2 do subjects[#subjects + 1] = ARGV[j] end
local erased = {}
for first = 1, #subjects, 1000 do
  local flags = redis.call('SMISMEMBER', KEYS[1], unpack(subjects, first, math.min(first + 999, #subjects)))
  for k = 1, #flags do erased[#erased + 1] = flags[k] end
end
local out = {erased}
for j = 3, #ARGV, 2 do
  local subject = ARGV[j]
  if ARGV[j + 1] == '1' then out[#out + 1] = redis.call('HGETALL', counters .. subject) else out[#out + 1] = {} end
  out[#out + 1] = redis.call('SMEMBERS', memberships .. subject)
end
return out
"""

# A batch's writes and its applied mark, atomically. KEYS: tombstones, applied mark. ARGV: the mark ('' = none), the
# counters, memberships and members key prefixes, the active zset, n and the n subjects of the 'u' blocks, then blocks
# of two kinds:
#   'u' (one subject's events or sweep, most of them, kept short: each argument costs packing and parsing, each call
#       from Lua about a microsecond): active ms ('' = leave), n, n field/value pairs to HSET, n, n fields to HDEL, n,
#       n segments entered, n, n segments left;
#   'g' (an alias): n_guards, guards..., n_commands, (n_args, args...) per command.
# A block whose subject (every guard) is in the tombstone set NOW is skipped: an erasure that came after the batch's
# read never finds its keys written again.
COMMIT_SCRIPT = """
local tomb = KEYS[1]
local counters, memberships, members, active = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n_subjects = tonumber(ARGV[6])
local erased = {}
for first = 7, 6 + n_subjects, 1000 do
  local flags = redis.call('SMISMEMBER', tomb, unpack(ARGV, first, math.min(first + 999, 6 + n_subjects)))
  for k = 1, #flags do erased[#erased + 1] = flags[k] == 1 end
end
local i = 7 + n_subjects
local u = 0
local skipped = {}
local latest = {}
while i <= #ARGV do
  if ARGV[i] == 'u' then
    u = u + 1
    local subject, ms = ARGV[6 + u], ARGV[i + 1]
    local ok = not erased[u]
    if not ok then skipped[#skipped + 1] = subject end
    i = i + 2
    local n = tonumber(ARGV[i])
    if ok and n > 0 then redis.call('HSET', counters .. subject, unpack(ARGV, i + 1, i + 2 * n)) end
    i = i + 2 * n + 1
    n = tonumber(ARGV[i])
    if ok and n > 0 then redis.call('HDEL', counters .. subject, unpack(ARGV, i + 1, i + n)) end
    i = i + n + 1
    n = tonumber(ARGV[i])
    if ok and n > 0 then
      redis.call('SADD', memberships .. subject, unpack(ARGV, i + 1, i + n))
      for s = i + 1, i + n do redis.call('ZADD', members .. ARGV[s], 0, subject) end
    end
    i = i + n + 1
    n = tonumber(ARGV[i])
    if ok and n > 0 then
      redis.call('SREM', memberships .. subject, unpack(ARGV, i + 1, i + n))
      for s = i + 1, i + n do redis.call('ZREM', members .. ARGV[s], subject) end
    end
    i = i + n + 1
    if ok and ms ~= '' then
      latest[#latest + 1] = ms
      latest[#latest + 1] = subject
    end
  else
    local ok = true
    local n = tonumber(ARGV[i + 1])
    for g = i + 2, i + n + 1 do
      if redis.call('SISMEMBER', tomb, ARGV[g]) == 1 then
        ok = false
        skipped[#skipped + 1] = ARGV[g]
      end
    end
    i = i + n + 2
    local commands = tonumber(ARGV[i])
    i = i + 1
    for c = 1, commands do
      local args = tonumber(ARGV[i])
      if ok then redis.call(unpack(ARGV, i + 1, i + args)) end
      i = i + args + 1
    end
  end
end
for first = 1, #latest, 1000 do
  redis.call('ZADD', active, 'GT', unpack(latest, first, math.min(first + 999, #latest)))
end
if ARGV[1] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
return skipped
"""


class _Writes:
    """The COMMIT_SCRIPT's blocks, flattened."""

    def __init__(self) -> None:
        self.subjects: list[str] = []  # of the 'u' blocks, in order
        self.args: list = []

    def subject(
        self,
        subject: str,
        fields: Mapping[str, str],
        stale: list[str],
        entered: list[str],
        left: list[str],
        active_ms: int | None,
    ) -> None:
        """A 'u' block: the subject's counters, memberships and place in the active zset."""
        self.subjects.append(subject)
        args = self.args
        args += ("u", "" if active_ms is None else active_ms, len(fields))
        for pair in fields.items():
            args += pair
        args.append(len(stale))
        args += stale
        args.append(len(entered))
        args += entered
        args.append(len(left))
        args += left

    def block(self, guards: tuple[str, ...], commands: list[tuple]) -> None:
        """A 'g' block: any commands, skipped when a guard subject is erased."""
        args = self.args
        args.append("g")
        args.append(len(guards))
        args.extend(guards)
        args.append(len(commands))
        for command in commands:
            args.append(len(command))
            args.extend(command)


_SHA = {script: hashlib.sha1(script.encode()).hexdigest() for script in (READ_SCRIPT, COMMIT_SCRIPT)}


def _evalsha(script: str, *args: Any) -> tuple:
    """EVALSHA: a script is 1-3 kB, sent and hashed again per EVAL (a tenth of the bytes of a batch of 10 events)."""
    return ("EVALSHA", _SHA[script], *args)


class _Conn:
    """One connection of its own: the few commands of a round trip go out together, packed by hiredis in C (redis-py's
    packing cost a third of the follower's time)."""

    def __init__(self, url: str, block_ms: int) -> None:
        self.pool = redis.ConnectionPool.from_url(
            url, protocol=2, socket_connect_timeout=5, socket_timeout=block_ms / 1000 + 10
        )
        self.conn = self.pool.get_connection()

    def call(self, commands: list[tuple]) -> list[Any]:
        """Send all, read all; an error reply comes back as the exception object, not raised. A script that was not
        in Redis's cache (a restart, SCRIPT FLUSH) did not run: it goes again, alone, with EVAL (which caches it)."""
        replies = self._call(commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            scripts = {sha: script for script, sha in _SHA.items()}
            again = self._call([("EVAL", scripts[commands[i][1]], *commands[i][2:]) for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    def _call(self, commands: list[tuple]) -> list[Any]:
        conn = self.conn
        try:
            # one write: a write per command costs a loopback TCP segment and a wake-up of Redis each (a sixth of
            # the follower's CPU at 10-event batches)
            conn.send_packed_command([b"".join([pack_command(c) for c in commands])])
            out = []
            for _ in commands:
                try:
                    out.append(conn.read_response())
                except ResponseError as error:
                    out.append(error)
            return out
        except BaseException:
            conn.disconnect()  # a half-read reply must not be read by the next call
            raise

    def close(self) -> None:
        self.pool.release(self.conn)
        self.pool.disconnect()


@dataclass
class _Run:
    """Entries decoded, committed together: events, or the aliases of one entry; ``last_id`` is the applied mark."""

    last_id: str
    items: list[Event | Alias]


@dataclass
class _Prepared:
    """A batch read but not wholly committed: kept across a Redis outage so it is neither lost nor judged twice."""

    ids: list[str]
    runs: list[_Run]


class SegmentFollower:
    """``run()`` until ``stop()`` (or ``max_seconds``); see the module docstring for the guarantees."""

    def __init__(
        self,
        redis_url: str,
        names: StreamNames,
        segments: Mapping[str, Segment],
        categories: Mapping[str, frozenset[str]],
        *,
        group: str = "segments",
        consumer: str | None = None,
        horizon_h: int = DEFAULT_HORIZON_H,
        gap_ms: int = SESSION_GAP_MS,
        batch: int = 500,
        block_ms: int = 1000,
        sweep_interval_s: float | None = 60.0,
        load_rules: Callable[[], Mapping[str, Segment]] | None = None,
        dedupe_ids: int = 200_000,
        cache_users: int = 50_000,  # 2-10 kB each (9 kB measured for users with 15 events over 20 rules)
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.names = names
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.categories = categories
        self.horizon_h = horizon_h
        self.gap_ms = gap_ms
        self.batch = batch
        self.block_ms = block_ms
        self.sweep_interval_s = sweep_interval_s
        self.load_rules = load_rules
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.stats = FollowerStats()
        self._recent = RecentIds(dedupe_ids)
        self._stop = threading.Event()
        self._redis = _Conn(redis_url, block_ms)
        self._tomb = tombstone_key(names)
        self._applied_key = segments_key(names, "applied")
        self._active_key = segments_key(names, "active")
        self._version_key = segments_key(names, RULES_VERSION)
        # the scripts build the per-subject keys from these prefixes (one argument per subject, not one per key)
        self._prefixes = (counters_key(names, ""), memberships_key(names, ""), members_key(names, ""))
        for prefix, key in zip(self._prefixes, (counters_key, memberships_key, members_key), strict=True):
            if key(names, "x") != prefix + "x":
                raise ValueError(f"{key.__name__} is not a prefix and a name: the follower's scripts need one")
        self._rules_version: bytes | None = None
        self._to_ack: list[str] = []
        self._applied: tuple[int, int] | None = None
        self._prepared: _Prepared | None = None
        # entries read with the previous batch's commit, in the same round trip (step applies them next)
        self._ahead: list[tuple[str, dict[bytes, bytes] | None]] = []
        self._read_ahead = False  # whether this commit may read ahead (step's own batches only)
        self._reread = False  # a round trip failed: a read's reply may be lost, its entries pending unseen
        self._uncertain = False  # a commit failed without a reply: whether it applied is read back from Redis
        # users' counters as this process wrote them (it is their only writer): a batch reads only the others
        self._states: dict[str, UserState] = {}
        self.cache_users = cache_users
        self._per_entry = 1.0  # events per entry, on average lately
        self._sweep_job: Iterator[None] | None = None
        self._swept_hour: int | None = None
        self._next_sweep_check = 0.0
        self._set_segments(segments)

    # -- rules ------------------------------------------------------------------------------------------------------
    def _set_segments(self, segments: Mapping[str, Segment]) -> None:
        self.rules = RuleSet(segments)
        self.segments = self.rules.segments
        self.features = self.rules.features

    def _reload(self, version: bytes | None) -> None:
        if version == self._rules_version:
            return
        first = self._rules_version is None
        self._rules_version = version
        if self.load_rules is None or first:
            return
        old = self.segments
        self._set_segments(self.load_rules())
        self.stats.reloads += 1
        removed = [name for name in old if name not in self.segments]
        changed = [n for n, s in self.segments.items() if n not in old or old[n].rule != s.rule]
        for name in removed:
            self._drop_segment(name)
        log.info(
            "rules reloaded: %d segments (%d new or changed, %d removed)",
            len(self.segments),
            len(changed),
            len(removed),
        )
        if changed:  # their members now: every active user, evaluated as of the clock
            self._sweep_job = self._sweep_steps(self.clock_ms())

    def _drop_segment(self, name: str) -> None:
        key = members_key(self.names, name)
        client = redis.Redis(connection_pool=self._redis.pool)
        for chunk in _chunks((m for m, _ in client.zscan_iter(key)), _SWEEP_CHUNK):
            pipe = client.pipeline(transaction=False)
            for member in chunk:
                pipe.srem(memberships_key(self.names, member.decode()), name)
            pipe.execute()
        client.delete(key)

    # -- the loop ---------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask ``run`` to finish its batch and return (safe from a signal handler)."""
        self._stop.set()

    def ensure_group(self) -> None:
        reply = self._redis.call([("XGROUP", "CREATE", self.names.stream, self.group, "0", "MKSTREAM")])[0]
        if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
            raise reply
        reply = self._redis.call([("GET", self._applied_key), ("GET", self._version_key)])
        self._applied = parse_id(reply[0].decode()) if isinstance(reply[0], bytes) else None
        self._rules_version = reply[1] if isinstance(reply[1], bytes) else b""

    def run(self, max_seconds: float | None = None, stop: threading.Event | None = None) -> FollowerStats:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        if stop is not None:
            self._stop = stop
        self._with_retry(self.ensure_group)
        self._with_retry(self.recover)
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            self._with_retry(self.step)
        self._with_retry(self._apply_ahead)
        self._with_retry(self._flush_ack)
        return self.stats

    def _apply_ahead(self) -> None:
        """Apply the entries read ahead, reading no more (when ``run`` ends)."""
        entries, self._ahead = self._ahead, []
        if entries:
            self.apply(entries)

    def _with_retry(self, action: Callable[[], Any]) -> Any:
        delay = 0.1
        while True:
            try:
                return action()
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                self._reread = True
                if self._stop.is_set():
                    raise
                self.stats.retries += 1
                log.warning("Redis unavailable (%s: %s); retrying in %.1fs", type(error).__name__, error, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def step(self) -> int:
        """One read and apply (and one sweep chunk when a sweep is due); returns the entries read. The read is the
        previous commit's read ahead when that one found entries (one round trip fewer per batch)."""
        self._commit_prepared()  # a batch an outage interrupted
        if self._reread:  # entries Redis delivered in a reply that was lost are pending: read them again
            self._ahead = []
            self.recover()
            self._reread = False
        self._maybe_sweep()
        if self._sweep_job is not None:
            try:
                next(self._sweep_job)
            except StopIteration:
                self._sweep_job = None
        if self._ahead:
            entries, self._ahead = self._ahead, []
            self._apply_read(entries)
            return len(entries)
        # a sweep in progress: do not wait on the stream (BLOCK 0 would wait for ever)
        reply = self._redis.call([self._read_command(block=self._sweep_job is None)])[0]
        if isinstance(reply, Exception):
            if "NOGROUP" in str(reply):  # the stream was deleted (Redis restarted empty): start over
                self.ensure_group()
                return 0
            raise reply
        entries = _entries(reply)
        if entries:
            self._apply_read(entries)
        elif self._to_ack:
            self._flush_ack()
        return len(entries)

    def _read_command(self, block: bool) -> tuple:
        count = max(1, round(self.batch / self._per_entry))  # ``batch`` counts events; an entry holds a client's batch
        wait = ("BLOCK", self.block_ms) if block else ()
        return (
            "XREADGROUP",
            "GROUP",
            self.group,
            self.consumer,
            "COUNT",
            count,
            *wait,
            "STREAMS",
            self.names.stream,
            ">",
        )

    def _apply_read(self, entries: list[tuple[str, dict[bytes, bytes] | None]]) -> None:
        """Apply entries step read (their last commit reads the next ones ahead)."""
        applied = self.stats.events
        events = self.stats.events + self.stats.bots + self.stats.duplicates + self.stats.erased
        read_at = time.perf_counter()
        self._read_ahead = True
        try:
            self.apply(entries)
        finally:
            self._read_ahead = False
        self.stats.apply_ms.append((1000 * (time.perf_counter() - read_at), self.stats.events - applied))
        events = self.stats.events + self.stats.bots + self.stats.duplicates + self.stats.erased - events
        self._per_entry = 0.8 * self._per_entry + 0.2 * max(1.0, events / len(entries))

    def recover(self) -> None:
        """Take over the entries other consumers of the group left pending (a follower that died; one follows at a
        time), then re-read this consumer's pending entries: those ``<= applied`` are acknowledged only."""
        cursor = "0-0"
        while True:
            reply = self._redis.call(
                [("XAUTOCLAIM", self.names.stream, self.group, self.consumer, 0, cursor, "COUNT", 1000, "JUSTID")]
            )[0]
            if isinstance(reply, Exception):
                raise reply
            cursor = reply[0].decode()
            if cursor == "0-0":
                break
        for info in self._redis.call([("XINFO", "CONSUMERS", self.names.stream, self.group)])[0]:
            fields = dict(zip(info[::2], info[1::2], strict=True))
            name = fields[b"name"].decode()
            if name != self.consumer and int(fields[b"pending"]) == 0:
                self._redis.call([("XGROUP", "DELCONSUMER", self.names.stream, self.group, name)])
        while True:
            reply = self._redis.call(
                [
                    (
                        "XREADGROUP",
                        "GROUP",
                        self.group,
                        self.consumer,
                        "COUNT",
                        self.batch,
                        "STREAMS",
                        self.names.stream,
                        "0",
                    )
                ]
            )[0]
            if isinstance(reply, Exception):
                raise reply
            entries = _entries(reply)
            if not entries:
                return
            log.info("recovering %d pending entries", len(entries))
            self.apply(entries)
            self._flush_ack()

    def _flush_ack(self) -> None:
        if self._to_ack:
            self._redis.call([("XACK", self.names.stream, self.group, *self._to_ack)])
            self._to_ack = []

    # -- applying a batch -------------------------------------------------------------------------------------------
    def apply(self, entries: list[tuple[str, dict[bytes, bytes] | None]]) -> None:
        """Apply entries read from the stream (in id order) exactly once, then queue their acknowledgement. Entries
        are cut into runs at alias entries; each run commits with its last id as the ``applied`` mark."""
        self.stats.entries += len(entries)
        fresh = [(i, f) for i, f in entries if self._applied is None or parse_id(i) > self._applied]
        self.stats.skipped += len(entries) - len(fresh)
        runs: list[_Run] = []
        group: list[tuple[str, dict[bytes, bytes] | None]] = []
        for entry in fresh:
            if entry[1] is not None and entry[1].get(TABLE_FIELD) == b"aliases":
                if group:
                    runs.append(self._prepare(group))
                    group = []
                runs.append(self._prepare([entry]))
            else:
                group.append(entry)
        if group:
            runs.append(self._prepare(group))
        self._prepared = _Prepared([entry_id for entry_id, _ in entries], runs)
        self._commit_prepared()

    def _prepare(self, entries: list[tuple[str, dict[bytes, bytes] | None]]) -> _Run:
        """Decode and drop bots and recent duplicates, once (a retried commit must not see its own ids as seen)."""
        decoded = decode_entries(entries)
        self.stats.bots += decoded.bots
        self.stats.malformed += decoded.malformed
        items: list[Event | Alias] = []
        for run in decoded.runs:
            if isinstance(run, Alias):
                items.append(run)
                continue
            keep = self._recent.keep_new([e.event_id for e in run])
            if keep is not None:
                self.stats.duplicates += keep.count(False)
                run = [e for e, k in zip(run, keep, strict=True) if k]
            items.extend(run)
        return _Run(entries[-1][0], items)

    def _commit_prepared(self) -> None:
        """Commit the prepared runs in order (each one script call); a run committed is never applied again: after an
        error (the commit's reply lost?) the applied mark says which runs did commit, and the cached states, changed
        before the commit, are forgotten."""
        prepared = self._prepared
        if prepared is None:
            return
        if self._uncertain:
            self._states.clear()
            mark = self._redis.call([("GET", self._applied_key)])[0]
            applied = parse_id(mark.decode()) if isinstance(mark, bytes) else None
            while prepared.runs and applied is not None and parse_id(prepared.runs[0].last_id) <= applied:
                prepared.runs.pop(0)
            if applied is not None and (self._applied is None or applied > self._applied):
                self._applied = applied  # entries read again (recover) up to it are skipped, not judged again
            self._uncertain = False
        while prepared.runs:
            run = prepared.runs[0]
            aliases = [a for a in run.items if isinstance(a, Alias)]
            self._uncertain = True
            if aliases:
                for alias in aliases[:-1]:
                    self._apply_alias(alias, None)
                self._apply_alias(aliases[-1], run.last_id)
            else:
                ahead = self._read_ahead and len(prepared.runs) == 1  # the batch's last commit
                self._apply_events([e for e in run.items if isinstance(e, Event)], run.last_id, ahead)
            self._uncertain = False
            self._applied = parse_id(run.last_id)
            prepared.runs.pop(0)
        self.stats.batches += 1
        self._to_ack += prepared.ids
        self._prepared = None

    def _read(
        self, subjects: list[str], extra: list[tuple] = (), fresh: bool = False
    ) -> tuple[list[bool], list[UserState], list[set[str]], list[Any]]:
        """Per subject: erased?, counters, memberships (READ_SCRIPT), with ``extra`` commands and the previous
        batch's XACK in the same round trip."""
        commands: list[tuple] = []
        ack = bool(self._to_ack)
        if ack:
            commands.append(("XACK", self.names.stream, self.group, *self._to_ack))
        args: list = [*self._prefixes[:2]]
        cache = self._states
        for subject in subjects:
            args.append(subject)
            args.append("0" if subject in cache and not fresh else "1")
        commands.append(_evalsha(READ_SCRIPT, 1, self._tomb, *args))
        commands.extend(extra)
        replies = self._redis.call(commands)
        if ack:
            self._to_ack = []
            replies = replies[1:]
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        flat = replies[0]
        erased = [bool(x) for x in flat[0]]
        states = []
        for subject, raw in zip(subjects, flat[1::2], strict=True):
            state = None if fresh else cache.get(subject)
            if state is None:
                state = cache[subject] = UserState.parse(raw)
                if len(cache) > self.cache_users:
                    del cache[next(iter(cache))]  # the oldest read
            states.append(state)
        memberships = [set(map(bytes.decode, raw)) for raw in flat[2::2]]
        return erased, states, memberships, replies[1:]

    def _commit(self, writes: _Writes, mark: str | None, ahead: bool = False) -> set[str]:
        """Apply the writes and the applied mark atomically (COMMIT_SCRIPT); returns the subjects erased since they
        were read, whose writes were left out (and whose cached state is forgotten). ``ahead``: the same round trip
        reads the next entries, without waiting (``step`` applies them next)."""
        keys = (self._tomb, self._applied_key)
        prefixes = (*self._prefixes, self._active_key)
        subjects = (len(writes.subjects), *writes.subjects)
        commands = [_evalsha(COMMIT_SCRIPT, 2, *keys, mark or "", *prefixes, *subjects, *writes.args)]
        if ahead:
            commands.append(self._read_command(block=False))
        replies = self._redis.call(commands)
        if ahead and not isinstance(replies[1], Exception):  # an error there is step's to meet on its own read
            self._ahead = _entries(replies[1])
        reply = replies[0]
        if isinstance(reply, Exception):
            raise reply
        skipped = {s.decode() for s in reply}
        for subject in skipped:
            self._states.pop(subject, None)
        return skipped

    def _apply_events(self, events: list[Event], mark: str | None, ahead: bool = False) -> None:
        by_subject: dict[str, list[Event]] = {}
        for event in events:
            by_subject.setdefault(event.subject, []).append(event)
        subjects = list(by_subject)
        erased, states, current, (version,) = self._read(subjects, [("GET", self._version_key)])
        self._reload(version if isinstance(version, bytes) else b"")
        # an anonymous visitor identified earlier: its events are the user's
        aliased = {s: st.alias for s, st, e in zip(subjects, states, erased, strict=True) if st.alias and not e}
        if aliased:
            targets = sorted(set(aliased.values()) - set(subjects))
            more = self._read(targets)[:3] if targets else ([], [], [])
            index = {s: i for i, s in enumerate(subjects + targets)}
            erased, states, current = (a + b for a, b in zip((erased, states, current), more, strict=True))
            for anon, user in aliased.items():
                by_subject.setdefault(user, []).extend(by_subject.pop(anon))
            subjects = list(by_subject)
            erased = [erased[index[s]] for s in subjects]
            states = [states[index[s]] for s in subjects]
            current = [current[index[s]] for s in subjects]
        writes = _Writes()
        entered = left = 0
        kept: list[str] = []
        rules, horizon_h = self.rules, self.horizon_h
        for subject, is_erased, state, now in zip(subjects, erased, states, current, strict=True):
            own = by_subject[subject]
            if is_erased:
                continue
            kept.append(subject)
            if len(own) > 1 and subject in aliased.values():
                own.sort(key=lambda e: e.entry_ms)  # merged from two subjects: back into stream order
            change = apply_events(state, own, rules, self.categories, horizon_h, self.gap_ms)
            last_ms = state.last_ms
            hour = last_ms // HOUR_MS
            stale = stale_fields(state, last_ms, horizon_h) if state.pruned_hour != hour else []
            state.pruned_hour = hour
            names = segments_to_evaluate(change, rules)
            if names:
                into, out = membership_changes(state, names, rules, last_ms, horizon_h, now)
                entered += len(into)
                left += len(out)
            else:
                into = out = []
            writes.subject(subject, change.fields, stale, into, out, last_ms)
        late = self._commit(writes, mark, ahead)  # erased after the read: left out by the script
        committed_ms = time.time() * 1000
        stats = self.stats
        counts: dict[int, int] = {}
        for subject in kept:
            if subject in late:
                continue
            for event in by_subject[subject]:
                counts[event.entry_ms] = counts.get(event.entry_ms, 0) + 1
        applied = sum(counts.values())
        stats.events += applied
        stats.erased += len(events) - applied
        stats.entered += entered
        stats.left += left
        stats.latencies.extend((committed_ms - ms, n) for ms, n in counts.items())

    def _membership_writes(
        self, subject: str, state: UserState, now: set[str], names: tuple[str, ...], as_of_ms: int, commands: list
    ) -> tuple[int, int]:
        """For an alias's 'g' block: the commands that bring the subject's memberships to what they are at
        ``as_of_ms``."""
        entered, left = membership_changes(state, names, self.rules, as_of_ms, self.horizon_h, now)
        of = memberships_key(self.names, subject)
        if entered:
            commands.append(("SADD", of, *entered))
        if left:
            commands.append(("SREM", of, *left))
        for name in entered:
            commands.append(("ZADD", members_key(self.names, name), 0, subject))
        for name in left:
            commands.append(("ZREM", members_key(self.names, name), subject))
        return len(entered), len(left)

    def _apply_alias(self, alias: Alias, mark: str | None) -> None:
        """Move the visitor's counters into the user's and point the visitor's hash at the user."""
        anon, user = alias.anonymous_id, alias.user_id
        erased, (source, target), (anon_now, user_now), _ = self._read([anon, user])
        writes = _Writes()
        if not any(erased) and anon != user and source.alias is None:
            commands: list[tuple] = []
            fields = merge_states(target, source)
            if fields:
                commands.append(("HSET", counters_key(self.names, user), *_flat(fields)))
            commands.append(("DEL", counters_key(self.names, anon)))
            commands.append(("HSET", counters_key(self.names, anon), ALIAS, user))
            commands.append(("SADD", visitors_key(self.names, user), anon))
            names = tuple(n for n in self.rules.order if n in anon_now)
            self._membership_writes(anon, UserState(), anon_now, names, 0, commands)
            commands.append(("ZREM", self._active_key, anon))
            if target.last_ms is not None:
                self._membership_writes(user, target, user_now, self.rules.order, target.last_ms, commands)
                commands.append(("ZADD", self._active_key, "GT", target.last_ms, user))
            writes.block((anon, user), commands)
            self.stats.aliases += 1
        skipped = self._commit(writes, mark)
        if writes.args and not skipped:
            self._states[anon] = UserState(alias=user)
        else:
            self._states.pop(user, None)

    # -- windows sliding --------------------------------------------------------------------------------------------
    def _maybe_sweep(self) -> None:
        if self.sweep_interval_s is None or self._sweep_job is not None:
            return
        now = time.monotonic()
        if now < self._next_sweep_check:
            return
        self._next_sweep_check = now + self.sweep_interval_s
        as_of = self.clock_ms()
        if self._swept_hour != as_of // HOUR_MS:  # membership changes by time alone only at an hour boundary
            self._sweep_job = self._sweep_steps(as_of)

    def sweep(self, as_of_ms: int) -> int:
        """Re-evaluate every active user as of ``as_of_ms`` (memberships that expired with their window leave);
        returns the users evaluated."""
        before = self.stats.swept_users
        for _ in self._sweep_steps(as_of_ms):
            pass
        return self.stats.swept_users - before

    def _sweep_steps(self, as_of_ms: int) -> Iterator[None]:
        client = redis.Redis(connection_pool=self._redis.pool)
        for chunk in _chunks(
            (m.decode() for m, _ in client.zscan_iter(self._active_key, count=_SWEEP_CHUNK)), _SWEEP_CHUNK
        ):
            self._sweep_chunk(chunk, as_of_ms)
            yield
        # users whose every event is older than the horizon are final now: no window will hold their events again
        client.zremrangebyscore(self._active_key, "-inf", f"({as_of_ms - self.horizon_h * HOUR_MS - HOUR_MS}")
        self._swept_hour = as_of_ms // HOUR_MS
        self.stats.sweeps += 1

    def _sweep_chunk(self, subjects: list[str], as_of_ms: int) -> None:
        # read from Redis, not the cache: a sweep may run in another process than the follower (one per hour is cheap)
        erased, states, current, _ = self._read(subjects, fresh=True)
        writes = _Writes()
        names = self.rules.order
        for subject, is_erased, state, now in zip(subjects, erased, states, current, strict=True):
            if is_erased or state.alias is not None:
                continue
            stale = stale_fields(state, as_of_ms, self.horizon_h)
            entered, left = membership_changes(state, names, self.rules, as_of_ms, self.horizon_h, now)
            if stale or entered or left:
                writes.subject(subject, {}, stale, entered, left, None)
            self.stats.entered += len(entered)
            self.stats.left += len(left)
        self.stats.swept_users += len(subjects)
        self._commit(writes, None)

    def close(self) -> None:
        self._redis.close()


# ---------------------------------------------------------------------------------------------------- helpers ---
def _entries(reply: Any) -> list[tuple[str, dict[bytes, bytes] | None]]:
    """XREADGROUP's raw reply -> [(id, fields or None for an entry deleted while pending)]."""
    if not reply:
        return []
    out = []
    for _stream, items in reply:
        for entry_id, raw in items:
            fields = None if raw is None else dict(zip(raw[::2], raw[1::2], strict=True))
            out.append((entry_id.decode(), fields))
    return out


def _flat(mapping: Mapping[str, str]) -> list[str]:
    return [x for pair in mapping.items() for x in pair]


def _chunks(values, size: int):
    chunk = []
    for value in values:
        chunk.append(value)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextmanager
def follower_gc(young: int = 20_000) -> Iterator[None]:
    """The garbage collector tuned for a follower's process, then put back: the follower makes a few short-lived
    containers per event (rows, events, lists), and collecting the young generation every 700 of them (CPython's
    default) cost a tenth of its CPU; every ``young`` is enough, as nothing it keeps forms cycles. What was loaded
    before (modules, rules) is frozen out of the old generation's scans."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def realtime_memberships(client: redis.Redis, names: StreamNames) -> dict[str, set[str]]:
    """segment -> members, read from every members zset under ``names`` (for tests and benchmarks)."""
    prefix = members_key(names, "")
    out: dict[str, set[str]] = {}
    for key in client.scan_iter(match=prefix + "*", count=1000):
        name = key.decode()[len(prefix) :]
        if ":" in name:  # a batch publish's temporary key
            continue
        out[name] = {m.decode() for m, _ in client.zscan_iter(key)}
    return out


def load_categories(items_path: str | Path | None) -> dict[str, frozenset[str]]:
    """item_id -> categories from an item metadata file (the format ``data.source.items_path`` reads)."""
    if items_path is None:
        return {}
    from recstack.data.sources.lake import read_items

    items = read_items(items_path)
    return {
        str(i): frozenset(str(c) for c in cats) for i, cats in zip(items["item_id"], items["categories"], strict=True)
    }


def follow(
    settings: CollectSettings,
    segments_dir: str | Path,
    items_path: str | Path | None = None,
    group: str = "segments",
    consumer: str | None = None,
    max_seconds: float | None = None,
    horizon_h: int = DEFAULT_HORIZON_H,
    sweep_interval_s: float | None = 60.0,
    gap_ms: int = SESSION_GAP_MS,
    registry: bool = True,
) -> dict[str, Any]:
    """``recstack-segments follow``: the YAML rules (synced into the Redis registry, plus rules saved through the
    API when ``registry``), followed until SIGTERM/SIGINT or ``max_seconds``; returns the stats summary."""
    from recstack.profiles.rules import load_segments
    from recstack.profiles.segments_online import registry as read_registry
    from recstack.profiles.segments_online import sync_yaml

    names = settings.names
    yaml_segments = load_segments(segments_dir, horizon_h)
    client = redis.Redis.from_url(settings.redis_url, protocol=2)
    sync_yaml(client, names, yaml_segments)

    def rules() -> dict[str, Segment]:
        # the registry holds the YAML rules too (synced above, and by every `recstack-segments run`): reading it
        # alone picks up a YAML file edited and synced later, where the copy loaded here would be stale
        return read_registry(client, names, horizon_h) if registry else dict(yaml_segments)

    follower = SegmentFollower(
        settings.redis_url,
        names,
        rules(),
        load_categories(items_path),
        group=group,
        consumer=consumer,
        horizon_h=horizon_h,
        gap_ms=gap_ms,
        batch=min(settings.consume_batch, 1000),
        sweep_interval_s=sweep_interval_s,
        load_rules=rules,
    )
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        log.info(
            "following %s as %s/%s: %d segments, %d features",
            names.stream,
            group,
            follower.consumer,
            len(follower.segments),
            len(follower.features),
        )
        with follower_gc():
            stats = follower.run(max_seconds, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        follower.close()
        client.close()
    return stats.summary()
