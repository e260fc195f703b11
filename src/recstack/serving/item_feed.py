"""Upserts between Redis and every worker's :class:`~recstack.serving.live_items.LiveItems`.

* :meth:`ItemFeed.publish` (``POST /items``): one atomic server-side script writes the record to the items hash and
  the upsert log (:mod:`recstack.collect.catalogue`) and returns its version; the worker then applies it at once.
* :meth:`ItemFeed.snapshot` (start-up, and after Redis was unreachable): the log's newest id, then every record of the
  hash (HSCAN pages); records newer than what the worker holds are applied, and the log is followed from that id.
* :meth:`ItemFeed.follow` (a background task per worker): every ``poll_s`` it reads the log after the last id it saw
  and applies what other workers published, so an upsert reaches every worker within about ``poll_s`` (0.1 s by
  default: one small Redis read per worker per poll). A failed read (Redis away) makes the next successful poll a
  snapshot: a log trimmed meanwhile loses nothing.

Every Redis call goes through the online store's bounded pool, timeout and circuit breaker, so a slow or dead Redis
never holds up requests: ``POST /items`` then answers 503 (the upsert would not survive a restart or reach the other
workers), and recommendations go on with the items already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from typing import Any

from recstack.collect.catalogue import (
    LOG_MAXLEN,
    UPSERT_SCRIPT,
    ItemUpsert,
    decode_hash,
    decode_log,
    items_key,
    items_log_key,
)
from recstack.collect.records import StreamNames
from recstack.serving.live_items import LiveItems
from recstack.serving.online_store import RedisOnlineStore

logger = logging.getLogger(__name__)
LOG_BATCH = 1000
"""Log entries read per poll at most (the next poll reads on)."""
SCAN_PAGE = 256
"""Items hash entries per HSCAN call of a snapshot: each call stays small, well inside the store's timeout. The
snapshot reads the log's newest id first, so an upsert written while it scans is read again from the log (applying is
idempotent by version)."""


def _newest_id(newest: Any) -> str:
    return newest[0][0].decode() if newest else "0-0"


@dataclass(frozen=True)
class Upserted:
    """The answer to one ``POST /items``: the stored version, whether the item was new, its text neighbours."""

    version: str
    created: bool
    neighbours: tuple[str, ...]


class ItemFeed:
    """One worker's link between Redis and its live items (see the module docstring)."""

    def __init__(self, store: RedisOnlineStore, names: StreamNames, live: LiveItems, *, poll_s: float) -> None:
        self.store = store
        self.live = live
        self.hash_key = items_key(names)
        self.log_key = items_log_key(names)
        self.poll_s = poll_s
        self.last_id: str | None = None  # None: the next read is a snapshot
        self._task: asyncio.Task[None] | None = None

    # -- writing --------------------------------------------------------------------------------------------------

    async def publish(self, record: ItemUpsert) -> str | None:
        """Persist one upsert; its version (the log id), or ``None`` when Redis is unavailable."""
        payload = record.to_json()

        async def call(client: Any) -> Any:
            return await client.eval(UPSERT_SCRIPT, 2, self.hash_key, self.log_key, record.item_id, payload, LOG_MAXLEN)

        version = await self.store.call_async(call)
        return None if version is None else (version.decode() if isinstance(version, bytes) else str(version))

    async def upsert(self, record: ItemUpsert) -> Upserted | None:
        """``POST /items``: encode (off the event loop), persist, apply here; ``None`` when Redis is unavailable."""
        created = record.item_id not in self.live.pipeline.item_index  # before any await: as the request found it
        vector = await asyncio.to_thread(self.live.vector_for, record)
        version = await self.publish(replace(record, encoder=self.live.encoder_id, vector=vector))
        if version is None:
            return None
        # None when this worker's poll applied the published record while we awaited: it is applied either way.
        applied = self.live.apply(record.with_version(version), vector)
        return Upserted(version, created, () if applied is None else applied.neighbours)

    # -- reading --------------------------------------------------------------------------------------------------

    def snapshot_sync(self) -> int | None:
        """The start-up snapshot, synchronously (the worker is not ready before it): records applied, or ``None`` when
        Redis is unavailable (the background poll then takes the snapshot once it is back)."""
        newest = self.store.call(lambda client: client.xrevrange(self.log_key, "+", "-", count=1))
        if newest is None:
            return None
        cursor, raw = 0, {}
        while True:
            page = self.store.call(lambda client, c=cursor: client.hscan(self.hash_key, c, count=SCAN_PAGE))
            if page is None:
                return None
            cursor, values = page
            raw.update(values)
            if not cursor:
                break
        count = 0
        for record in decode_hash(raw):
            if self.live.is_newer(record):
                count += self.live.apply(record, self.live.vector_for(record)) is not None
        self.last_id = _newest_id(newest)
        return count

    async def snapshot(self) -> int | None:
        """The same from the running worker (vectors of another encoder are encoded off the event loop)."""
        newest = await self.store.call_async(lambda client: client.xrevrange(self.log_key, "+", "-", count=1))
        if newest is None:
            return None
        cursor, raw = 0, {}
        while True:
            page = await self.store.call_async(lambda client, c=cursor: client.hscan(self.hash_key, c, count=SCAN_PAGE))
            if page is None:
                return None
            cursor, values = page
            raw.update(values)
            if not cursor:
                break
        count = 0
        for record in decode_hash(raw):
            count += await self._apply_one(record)
        self.last_id = _newest_id(newest)
        return count

    async def _apply_one(self, record: ItemUpsert) -> int:
        if not self.live.is_newer(record):
            return 0
        vector = await asyncio.to_thread(self.live.vector_for, record)
        return int(self.live.apply(record, vector) is not None)

    async def poll(self) -> int | None:
        """One read of the log after the last id seen (a snapshot when there is none); records applied, or ``None``
        when Redis was unavailable."""
        if self.last_id is None:
            return await self.snapshot()
        last = self.last_id
        entries = await self.store.call_async(
            lambda client: client.xrange(self.log_key, f"({last}", "+", count=LOG_BATCH)
        )
        if entries is None:
            self.last_id = None
            return None
        count = 0
        for record in decode_log(entries):
            count += await self._apply_one(record)
        if entries:
            self.last_id = entries[-1][0].decode()
        return count

    async def follow(self) -> None:
        """Poll forever (the worker's background task); errors are logged, never fatal."""
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("item feed: poll failed; retrying")
                self.last_id = None
            await asyncio.sleep(self.poll_s)

    def start(self) -> None:
        """Start :meth:`follow` on the running event loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.follow(), name="recstack-item-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
